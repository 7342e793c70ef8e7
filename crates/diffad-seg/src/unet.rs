//! DRAEM's discriminative sub-network, the segmenter of DiffAD (paper Sec. 3.4,
//! `docs/reference.md` §4).
//!
//! A U-Net of `Conv3x3-BN-ReLU` modules. With base width `w`:
//!
//! ```text
//! encoder  block1..block6: [Conv3x3-BN-ReLU] x2 with w, 2w, 4w, 8w, 8w, 8w channels,
//!          MaxPool(2) between consecutive blocks (5 pools)
//! decoder  for each level (up_b/db_b, up1/db1, .., up4/db4):
//!          up = Upsample x2 (bilinear, align_corners = True) -> Conv3x3-BN-ReLU
//!          db = [Conv3x3-BN-ReLU] x2 on concat(up, skip)
//! fin_out  Conv3x3 to 2 logits (normal, anomalous)
//! ```
//!
//! Parameter names follow the PyTorch state dict of DRAEM's
//! `DiscriminativeSubNetwork` (`encoder_segment.block1.0.weight`,
//! `encoder_segment.block1.1.running_mean`, `decoder_segment.up_b.1.weight`,
//! `decoder_segment.fin_out.0.bias`, ...), so a DRAEM segmentation checkpoint
//! converted to safetensors loads without renaming. Initialisation is DRAEM's
//! `weights_init`: conv weights `N(0, 0.02)` (biases keep PyTorch's default),
//! BatchNorm weight `N(1, 0.02)` and bias 0.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffad_nn::{BatchNorm2d, BatchNormInit, Conv2d, Conv2dConfig};

use crate::error::{shape_err, Error, Result};
use diffad_nn::checkpoint::{load_varmap_from, save_tensors, TensorFile};

/// PyTorch's BatchNorm defaults, which DRAEM keeps.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// Shape of a [`DiscriminativeUNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiscriminativeUNetConfig {
    /// Input channels: 9 for DiffAD's `(x_r, x_inter, x_a)`, 6 without the
    /// interpolated channels (see [`SegInput`](crate::SegInput)).
    pub in_channels: usize,
    /// Base width `w` (DRAEM and DiffAD: 64).
    pub base_width: usize,
    /// Output logits (2: normal, anomalous).
    pub out_channels: usize,
}

impl Default for DiscriminativeUNetConfig {
    /// DiffAD's segmenter: 9 input channels, base width 64, 2 logits.
    fn default() -> Self {
        Self {
            in_channels: 9,
            base_width: 64,
            out_channels: 2,
        }
    }
}

impl DiscriminativeUNetConfig {
    /// A config with the given input channels and base width, 2 logits.
    pub fn new(in_channels: usize, base_width: usize) -> Self {
        Self {
            in_channels,
            base_width,
            out_channels: 2,
        }
    }

    /// Number of trainable parameters (conv weights and biases, BatchNorm
    /// weights and biases), from the architecture alone: 28,375,874 at the
    /// default (PyTorch's count for DRAEM's `DiscriminativeSubNetwork(9, 2, 64)`).
    pub fn num_parameters(&self) -> usize {
        let w = self.base_width;
        let conv = |i: usize, o: usize| i * o * 9 + o;
        let bn = |c: usize| 2 * c;
        let cbr = |i: usize, o: usize| conv(i, o) + bn(o);
        let double = |i: usize, o: usize| cbr(i, o) + cbr(o, o);
        let widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w];
        let mut total = 0;
        let mut prev = self.in_channels;
        for &c in &widths {
            total += double(prev, c);
            prev = c;
        }
        // Decoder levels: (input width, output width, skip width).
        for (inp, out, skip) in decoder_levels(w) {
            total += cbr(inp, out) + double(out + skip, out);
        }
        total + conv(w, self.out_channels)
    }

    fn validate(&self) -> Result<()> {
        if self.in_channels == 0 || self.base_width == 0 || self.out_channels == 0 {
            return Err(Error::Config(format!(
                "DiscriminativeUNetConfig needs positive channel counts, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// `(input, output, skip)` widths of the five decoder levels, deepest first
/// (`up_b/db_b`, `up1/db1`, .., `up4/db4`).
fn decoder_levels(w: usize) -> [(usize, usize, usize); 5] {
    [
        (8 * w, 8 * w, 8 * w),
        (8 * w, 4 * w, 8 * w),
        (4 * w, 2 * w, 4 * w),
        (2 * w, w, 2 * w),
        (w, w, w),
    ]
}

/// Names of the decoder's upsampling and double-conv modules, deepest first.
const DECODER_NAMES: [(&str, &str); 5] = [
    ("up_b", "db_b"),
    ("up1", "db1"),
    ("up2", "db2"),
    ("up3", "db3"),
    ("up4", "db4"),
];

/// `Conv3x3 (padding 1) -> BatchNorm -> ReLU`.
#[derive(Debug, Clone)]
struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBnRelu {
    /// `conv_idx`/`bn_idx` are the positions inside DRAEM's `nn.Sequential`.
    fn new(
        inp: usize,
        out: usize,
        vb: &VarBuilder,
        conv_idx: usize,
        bn_idx: usize,
    ) -> Result<Self> {
        let conv = conv3x3(inp, out, vb.pp(conv_idx.to_string()))?;
        let bn = diffad_nn::batch_norm2d_with_init(
            out,
            BN_EPS,
            BN_MOMENTUM,
            BatchNormInit::draem(),
            vb.pp(bn_idx.to_string()),
        )?;
        Ok(Self { conv, bn })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        Ok(self.bn.forward_t_relu(&y, train)?)
    }
}

fn conv3x3(inp: usize, out: usize, vb: VarBuilder) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding: 1,
        init: Some(diffad_nn::init::DRAEM_CONV_WEIGHT),
        ..Conv2dConfig::default()
    };
    Ok(diffad_nn::conv2d(inp, out, 3, config, vb)?)
}

/// `[Conv3x3-BN-ReLU] x2` (`nn.Sequential` indices 0/1 and 3/4).
#[derive(Debug, Clone)]
struct DoubleConv {
    first: ConvBnRelu,
    second: ConvBnRelu,
}

impl DoubleConv {
    fn new(inp: usize, out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            first: ConvBnRelu::new(inp, out, &vb, 0, 1)?,
            second: ConvBnRelu::new(out, out, &vb, 3, 4)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.first.forward_t(x, train)?;
        self.second.forward_t(&y, train)
    }
}

/// `Upsample x2 (bilinear, align_corners) -> Conv3x3-BN-ReLU` (indices 1/2).
#[derive(Debug, Clone)]
struct UpConv {
    block: ConvBnRelu,
}

impl UpConv {
    fn new(inp: usize, out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            block: ConvBnRelu::new(inp, out, &vb, 1, 2)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let up = diffad_nn::upsample_bilinear2d(x, 2 * h, 2 * w)?;
        self.block.forward_t(&up, train)
    }
}

/// DRAEM's discriminative sub-network (see the module doc).
///
/// `forward_t(x, train)` maps `(B, in_channels, H, W)` to logits
/// `(B, 2, H, W)`; `H` and `W` must be multiples of 32 (five 2x2 poolings
/// whose outputs are concatenated back with the skips). In training mode
/// BatchNorm uses batch statistics and updates its running statistics; in
/// evaluation mode it uses the running statistics.
#[derive(Debug, Clone)]
pub struct DiscriminativeUNet {
    config: DiscriminativeUNetConfig,
    encoder: Vec<DoubleConv>,
    up: Vec<UpConv>,
    decoder: Vec<DoubleConv>,
    fin_out: Conv2d,
    /// The weights' dtype (`vb.dtype()` at construction).
    dtype: DType,
}

impl DiscriminativeUNet {
    /// Builds the network from `vb`, whose root holds the state dict of
    /// DRAEM's `DiscriminativeSubNetwork` (see the module doc for names).
    /// With a `VarMap`-backed builder, missing variables are created with
    /// DRAEM's init.
    pub fn new(config: DiscriminativeUNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let dtype = vb.dtype();
        let w = config.base_width;
        let enc_vb = vb.pp("encoder_segment");
        let widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w];
        let mut encoder = Vec::with_capacity(6);
        let mut prev = config.in_channels;
        for (i, &c) in widths.iter().enumerate() {
            encoder.push(DoubleConv::new(
                prev,
                c,
                enc_vb.pp(format!("block{}", i + 1)),
            )?);
            prev = c;
        }
        let dec_vb = vb.pp("decoder_segment");
        let mut up = Vec::with_capacity(5);
        let mut decoder = Vec::with_capacity(5);
        for ((inp, out, skip), (up_name, db_name)) in
            decoder_levels(w).into_iter().zip(DECODER_NAMES)
        {
            up.push(UpConv::new(inp, out, dec_vb.pp(up_name))?);
            decoder.push(DoubleConv::new(out + skip, out, dec_vb.pp(db_name))?);
        }
        let fin_out = conv3x3(w, config.out_channels, dec_vb.pp("fin_out").pp("0"))?;
        Ok(Self {
            config,
            encoder,
            up,
            decoder,
            fin_out,
            dtype,
        })
    }

    /// A freshly initialised network whose variables live in `varmap`,
    /// drawn reproducibly from `seed` (one ChaCha8 stream per parameter name,
    /// keyed by `(seed, name)`, on the CPU: see `diffad_nn::init`).
    pub fn init(
        config: DiscriminativeUNetConfig,
        varmap: &VarMap,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let vb = diffad_nn::init::seeded_var_builder(varmap, seed, DType::F32, device);
        Self::new(config, vb)
    }

    /// Loads weights from a safetensors file with DRAEM's state-dict names
    /// (e.g. one written by [`save`](Self::save), by the trainer, or
    /// converted from a DRAEM `.pckl` with `scripts/convert_draem.py`), in
    /// `f32` on `device`. A missing key or wrong shape is an error naming the
    /// file and the parameter.
    pub fn load(
        config: DiscriminativeUNetConfig,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self::load_with_varmap(config, path, device)?.0)
    }

    /// [`load`](Self::load), also returning the `VarMap` that holds the
    /// variables, so the network can be trained further or saved with
    /// [`save`](Self::save).
    pub fn load_with_varmap(
        config: DiscriminativeUNetConfig,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        Self::load_with_varmap_dtype(config, path, DType::F32, device)
    }

    /// [`load`](Self::load) into `dtype`, converting the weights once: `BF16` or `F16`
    /// give half-precision inference. [`forward`](Self::forward) takes and returns the
    /// caller's dtype and runs the network in this one.
    pub fn load_with_dtype(
        config: DiscriminativeUNetConfig,
        path: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self::load_with_varmap_dtype(config, path, dtype, device)?.0)
    }

    fn load_with_varmap_dtype(
        config: DiscriminativeUNetConfig,
        path: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        let file = TensorFile::read(path.as_ref(), &Device::Cpu)?;
        let varmap = VarMap::new();
        let vb = diffad_nn::init::seeded_var_builder(&varmap, 0, dtype, device);
        let net = Self::new(config, vb)?;
        // Not strict: DRAEM checkpoints carry `num_batches_tracked`, trainer
        // checkpoints carry Adam's moments.
        load_varmap_from(&varmap, &file, "", false)?;
        Ok((net, varmap))
    }

    /// Writes the network's variables in `varmap` (weights, biases and
    /// BatchNorm running statistics) to `path` atomically, under DRAEM's
    /// names.
    pub fn save(varmap: &VarMap, path: impl AsRef<Path>) -> Result<()> {
        let tensors = varmap_tensors(varmap, "")?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "diffad-seg-unet/1".to_string());
        save_tensors(
            path.as_ref(),
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(meta),
        )?;
        Ok(())
    }

    /// The network's configuration.
    pub fn config(&self) -> &DiscriminativeUNetConfig {
        &self.config
    }

    /// The weights' dtype (`F32` unless loaded with [`load_with_dtype`](Self::load_with_dtype)).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Segmentation logits `(B, 2, H, W)` of `x` `(B, in_channels, H, W)`;
    /// `train` selects BatchNorm's batch statistics (and updates the running
    /// ones) or its running statistics. NaN or infinite inputs are an
    /// error ([`Error::NonFinite`]).
    /// The network runs in its weights' [`dtype`](Self::dtype); the logits come
    /// back in `x`'s.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims();
        let c = self.config.in_channels;
        let ok = matches!(dims, [_, ch, h, w] if *ch == c && *h > 0 && *w > 0 && h % 32 == 0 && w % 32 == 0);
        if !ok {
            return Err(shape_err(
                "DiscriminativeUNet input",
                format!("(B, {c}, H, W) with H and W positive multiples of 32"),
                dims,
            ));
        }
        // ReLU maps NaN to 0 and BatchNorm spreads it over a whole channel,
        // so a NaN input would silently turn into a plausible-looking map.
        let total = x.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !total.is_finite() {
            return Err(Error::NonFinite("DiscriminativeUNet input"));
        }
        let mut skips = Vec::with_capacity(6);
        let mut h = x.to_dtype(self.dtype)?;
        for (i, block) in self.encoder.iter().enumerate() {
            if i > 0 {
                h = diffad_nn::max_pool2d(&h, 2)?;
            }
            h = block.forward_t(&h, train)?;
            skips.push(h.clone());
        }
        // The deepest block's output starts the decoder; the other five are
        // skips, consumed deepest first.
        let mut h = skips
            .pop()
            .ok_or_else(|| Error::Config("empty encoder".into()))?;
        for (up, db) in self.up.iter().zip(&self.decoder) {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Config("encoder/decoder depth mismatch".into()))?;
            let u = up.forward_t(&h, train)?;
            h = db.forward_t(&Tensor::cat(&[&u, &skip], 1)?, train)?;
        }
        Ok(self.fin_out.forward(&h)?.to_dtype(x.dtype())?)
    }

    /// Inference: logits with BatchNorm in evaluation mode.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}

/// All variables of `varmap`, by name with `prefix` prepended, sorted.
pub(crate) fn varmap_tensors(
    varmap: &VarMap,
    prefix: &str,
) -> Result<std::collections::BTreeMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("VarMap lock poisoned".into()))?;
    Ok(data
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.as_tensor().clone()))
        .collect())
}
