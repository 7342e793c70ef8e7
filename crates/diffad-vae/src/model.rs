//! The KL autoencoder `E`/`D` (paper §3.2), layer for layer diffusers' `AutoencoderKL`.
//!
//! ```text
//! x (B,3,H,W) in [-1,1]
//!   encoder.conv_in → down_blocks[i] (resnets × layers_per_block, downsamplers.0 except last)
//!   → mid_block (resnet, attention, resnet) → conv_norm_out → SiLU → conv_out (2C channels)
//!   → quant_conv (1x1) → moments → DiagonalGaussian(μ, log σ²)
//! z (B,C,H/f,W/f)
//!   post_quant_conv (1x1) → decoder.conv_in → mid_block
//!   → up_blocks[i] (resnets × (layers_per_block + 1), upsamplers.0 except last)
//!   → conv_norm_out → SiLU → conv_out → x̂ (B,3,H,W)
//! ```
//!
//! Res blocks, attention, resampling and norms come from `diffad-nn` (diffusers'
//! `ResnetBlock2D`, `Attention`, `Downsample2D` with the asymmetric `(0,1,0,1)` pad,
//! `Upsample2D` nearest ×2 + conv, GroupNorm with ε = 1e-6). Parameter names are exactly
//! those of a diffusers `AutoencoderKL` state dict, so its `safetensors` file loads as is.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffad_nn::{
    conv2d, downsample2d, group_norm, resnet_block2d, unet_mid_block2d, upsample2d, Conv2d,
    Conv2dConfig, Downsample2D, GroupNorm, ResnetBlock2D, ResnetBlock2DConfig, UNetMidBlock2D,
    UNetMidBlock2DConfig, Upsample2D,
};

use diffad_nn::checkpoint;
use diffad_nn::latent::{DiagonalGaussian, LatentCodec};

use crate::config::{AutoencoderKlConfig, DiffusersFolder};
use crate::error::{Error, Result};

/// GroupNorm ε everywhere in diffusers' VAE.
const EPS: f64 = 1e-6;

fn mid_block(config: &AutoencoderKlConfig, seed: u64, vb: VarBuilder) -> Result<UNetMidBlock2D> {
    let channels = *config
        .block_out_channels
        .last()
        .ok_or_else(|| Error::Config("block_out_channels is empty".into()))?;
    let mid = UNetMidBlock2DConfig {
        groups: config.norm_num_groups,
        eps: EPS,
        dropout: config.dropout,
        add_attention: config.mid_block_add_attention,
        attention_head_dim: Some(channels),
        dropout_seed: seed,
        ..UNetMidBlock2DConfig::new(channels)
    };
    Ok(unet_mid_block2d(mid, vb)?)
}

fn resnet(
    config: &AutoencoderKlConfig,
    in_channels: usize,
    out_channels: usize,
    seed: u64,
    vb: VarBuilder,
) -> Result<ResnetBlock2D> {
    let cfg = ResnetBlock2DConfig {
        groups: config.norm_num_groups,
        eps: EPS,
        dropout: config.dropout,
        dropout_seed: seed,
        ..ResnetBlock2DConfig::new(in_channels, out_channels)
    };
    Ok(resnet_block2d(cfg, vb)?)
}

/// One `DownEncoderBlock2D`: res blocks, then an optional stride-2 downsampler.
#[derive(Debug, Clone)]
struct DownEncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

/// One `UpDecoderBlock2D`: res blocks, then an optional nearest ×2 upsampler with a conv.
#[derive(Debug, Clone)]
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

/// The encoder `E`: image `(B, 3, H, W)` → moments `(B, 2C, H/f, W/f)` (before
/// `quant_conv`).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// Builds the encoder under `vb` (diffusers prefix `encoder`). `seed` seeds dropout:
    /// res block `j` of level `i` draws its masks from `seed + 64 i + j`, the mid block's
    /// from `seed + 4096 (+ k)`, so no two blocks share a stream.
    pub fn new(config: &AutoencoderKlConfig, seed: u64, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let widths = &config.block_out_channels;
        let conv_in = conv2d(
            config.in_channels,
            widths[0],
            3,
            Conv2dConfig::padded(1),
            vb.pp("conv_in"),
        )?;
        let mut down_blocks = Vec::with_capacity(widths.len());
        let mut out_channels = widths[0];
        for (i, &width) in widths.iter().enumerate() {
            let in_channels = out_channels;
            out_channels = width;
            let vb_block = vb.pp("down_blocks").pp(i);
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { in_channels } else { out_channels };
                    let seed = seed.wrapping_add((i * 64 + j) as u64);
                    resnet(
                        config,
                        cin,
                        out_channels,
                        seed,
                        vb_block.pp("resnets").pp(j),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let downsampler = if i + 1 < widths.len() {
                let vb_down = vb_block.pp("downsamplers").pp(0);
                Some(downsample2d(out_channels, out_channels, true, 0, vb_down)?)
            } else {
                None
            };
            down_blocks.push(DownEncoderBlock {
                resnets,
                downsampler,
            });
        }
        let last = out_channels;
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: mid_block(config, seed.wrapping_add(4096), vb.pp("mid_block"))?,
            conv_norm_out: group_norm(config.norm_num_groups, last, EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(
                last,
                2 * config.latent_channels,
                3,
                Conv2dConfig::padded(1),
                vb.pp("conv_out"),
            )?,
        })
    }

    /// `x` `(B, 3, H, W)` in `[−1, 1]` → moments `(B, 2C, H/f, W/f)`. `train` enables dropout.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for block in &self.down_blocks {
            for r in &block.resnets {
                h = r.forward(&h, None, train)?;
            }
            if let Some(down) = &block.downsampler {
                h = down.forward(&h)?;
            }
        }
        h = self.mid_block.forward(&h, None, train)?;
        h = diffad_nn::silu(&self.conv_norm_out.forward(&h)?)?;
        Ok(self.conv_out.forward(&h)?)
    }
}

/// The decoder `D`: latent `(B, C, h, w)` (after `post_quant_conv`) → image `(B, 3, fh, fw)`.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// Builds the decoder under `vb` (diffusers prefix `decoder`). `seed` seeds dropout
    /// as in [`Encoder::new`] (the autoencoder passes the decoder `seed + 2^20`, so its
    /// streams differ from the encoder's).
    pub fn new(config: &AutoencoderKlConfig, seed: u64, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let conv_in = conv2d(
            config.latent_channels,
            reversed[0],
            3,
            Conv2dConfig::padded(1),
            vb.pp("conv_in"),
        )?;
        let mid = mid_block(config, seed.wrapping_add(4096), vb.pp("mid_block"))?;
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut out_channels = reversed[0];
        for (i, &width) in reversed.iter().enumerate() {
            let prev_channels = out_channels;
            out_channels = width;
            let vb_block = vb.pp("up_blocks").pp(i);
            let resnets = (0..=config.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { prev_channels } else { out_channels };
                    let seed = seed.wrapping_add((i * 64 + j) as u64);
                    resnet(
                        config,
                        cin,
                        out_channels,
                        seed,
                        vb_block.pp("resnets").pp(j),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let upsampler = if i + 1 < reversed.len() {
                let vb_up = vb_block.pp("upsamplers").pp(0);
                Some(upsample2d(out_channels, out_channels, true, vb_up)?)
            } else {
                None
            };
            up_blocks.push(UpDecoderBlock { resnets, upsampler });
        }
        let first = config.block_out_channels[0];
        Ok(Self {
            conv_in,
            mid_block: mid,
            up_blocks,
            conv_norm_out: group_norm(config.norm_num_groups, first, EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(
                first,
                config.out_channels,
                3,
                Conv2dConfig::padded(1),
                vb.pp("conv_out"),
            )?,
        })
    }

    /// `z` `(B, C, h, w)` → image `(B, 3, fh, fw)` (unclamped, nominally `[−1, 1]`).
    pub fn forward(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid_block.forward(&h, None, train)?;
        for block in &self.up_blocks {
            for r in &block.resnets {
                h = r.forward(&h, None, train)?;
            }
            if let Some(up) = &block.upsampler {
                h = up.forward(&h)?;
            }
        }
        h = diffad_nn::silu(&self.conv_norm_out.forward(&h)?)?;
        Ok(self.conv_out.forward(&h)?)
    }

    /// The last convolution (`decoder.conv_out`), whose weight gradient LDM uses for the
    /// adaptive weight of the adversarial loss.
    pub fn conv_out(&self) -> &Conv2d {
        &self.conv_out
    }
}

/// The four parts of the autoencoder, built over one `VarBuilder`.
#[derive(Debug, Clone)]
struct Network {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
}

impl Network {
    fn new(config: &AutoencoderKlConfig, seed: u64, vb: &VarBuilder) -> Result<Self> {
        let moments = 2 * config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            let vb = vb.pp("quant_conv");
            Some(conv2d(moments, moments, 1, Conv2dConfig::default(), vb)?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            let c = config.latent_channels;
            let vb = vb.pp("post_quant_conv");
            Some(conv2d(c, c, 1, Conv2dConfig::default(), vb)?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(config, seed, vb.pp("encoder"))?,
            decoder: Decoder::new(config, seed.wrapping_add(1 << 20), vb.pp("decoder"))?,
            quant_conv,
            post_quant_conv,
        })
    }

    fn encode(&self, x: &Tensor, train: bool) -> Result<DiagonalGaussian> {
        let h = self.encoder.forward(x, train)?;
        let moments = match &self.quant_conv {
            Some(q) => q.forward(&h)?,
            None => h,
        };
        Ok(DiagonalGaussian::from_moments(&moments)?)
    }

    fn decode(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(q) => q.forward(z)?,
            None => z.clone(),
        };
        self.decoder.forward(&z, train)
    }
}

/// A KL-regularised autoencoder with diffusers' `AutoencoderKL` architecture and
/// parameter names (see the module doc). Its variables live in a [`VarMap`], which is what
/// [`save`](Self::save), [`load_weights`](Self::load_weights) and the trainer operate on.
///
/// Two views of the same weights are kept: the variables themselves, used by
/// [`encode_raw`](Self::encode_raw) / [`decode_raw`](Self::decode_raw) (differentiable in
/// the weights, for training), and detached tensors sharing their storage, used by the
/// [`LatentCodec`] methods. Candle records the graph of every op that touches a variable,
/// so an inference pass through the variables keeps every intermediate activation alive
/// until its output is dropped (gigabytes for the paper's model at batch 8); the detached
/// view records nothing. Both see every update, since optimisers and loaders write the
/// variables in place.
#[derive(Clone)]
pub struct AutoencoderKl {
    net: Network,
    frozen: Network,
    config: AutoencoderKlConfig,
    varmap: VarMap,
    device: Device,
    /// The weights' dtype.
    dtype: DType,
}

impl std::fmt::Debug for AutoencoderKl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoencoderKl")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl AutoencoderKl {
    /// A freshly initialised model: PyTorch's default init (as diffusers), drawn on the CPU
    /// from `seed` per parameter name, so the same seed gives the same weights on any
    /// device. `seed` also seeds dropout.
    pub fn new(config: AutoencoderKlConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::from_varmap(config, VarMap::new(), seed, device)
    }

    /// Builds the model over `varmap`: variables already there (same names and shapes) are
    /// used as they are, missing ones are initialised from `seed`.
    pub fn from_varmap(
        config: AutoencoderKlConfig,
        varmap: VarMap,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Self::from_varmap_with_dtype(config, varmap, seed, DType::F32, device)
    }

    /// [`from_varmap`](Self::from_varmap) with new variables created in `dtype` (`F32`
    /// everywhere else in the crate; `F64` for finite-difference gradient checks).
    pub fn from_varmap_with_dtype(
        config: AutoencoderKlConfig,
        varmap: VarMap,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let vb = diffad_nn::init::seeded_var_builder(&varmap, seed, dtype, device);
        let net = Network::new(&config, seed, &vb)?;
        let detached: HashMap<String, Tensor> = {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| Error::Config("VarMap lock poisoned".into()))?;
            data.iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect()
        };
        let frozen_vb = VarBuilder::from_tensors(detached, dtype, device);
        let frozen = Network::new(&config, seed, &frozen_vb)?;
        Ok(Self {
            net,
            frozen,
            config,
            varmap,
            device: device.clone(),
            dtype,
        })
    }

    /// Loads a model from a safetensors file with diffusers' `AutoencoderKL` names (a
    /// diffusers `diffusion_pytorch_model.safetensors`, or one written by
    /// [`save`](Self::save)), in `f32` on `device`. Strict: see
    /// [`checkpoint::load_varmap`]. The model keeps its variables
    /// ([`varmap`](Self::varmap)), so it can be trained further.
    pub fn load(
        config: AutoencoderKlConfig,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        let model = Self::new(config, 0, device)?;
        model.load_weights(path)?;
        Ok(model)
    }

    /// [`load`](Self::load) into `dtype`: the weights are converted once, here. `BF16` or
    /// `F16` give half-precision inference; the [`LatentCodec`] methods take and return
    /// the caller's dtype (`f32` images and latents) and run the network in this one.
    pub fn load_with_dtype(
        config: AutoencoderKlConfig,
        path: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let model = Self::from_varmap_with_dtype(config, VarMap::new(), 0, dtype, device)?;
        model.load_weights(path)?;
        Ok(model)
    }

    /// Loads a diffusers `AutoencoderKL` folder (`config.json` and
    /// `diffusion_pytorch_model.safetensors`, as `save_pretrained` writes it): the
    /// architecture comes from `config.json` ([`DiffusersFolder::open`] lists the errors),
    /// the weights load strictly as in [`load`](Self::load).
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let folder = DiffusersFolder::open(dir.as_ref())?;
        Self::load(folder.config, &folder.weights_file, device)
    }

    /// Replaces the weights with those of a safetensors file (strict, all-or-nothing).
    pub fn load_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(checkpoint::load_varmap(&self.varmap, path.as_ref())?)
    }

    /// Saves the weights to a safetensors file atomically (`path.tmp`, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(checkpoint::save_varmap(&self.varmap, path.as_ref())?)
    }

    /// The architecture.
    pub fn config(&self) -> &AutoencoderKlConfig {
        &self.config
    }

    /// The variables (trainable parameters), keyed by diffusers' names.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights' dtype (`F32` unless loaded with [`load_with_dtype`](Self::load_with_dtype)).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The decoder (variable view, e.g. for its last layer's gradient).
    pub fn decoder(&self) -> &Decoder {
        &self.net.decoder
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    fn check_images(&self, x: &Tensor) -> Result<()> {
        let f = self.config.downsample_factor();
        match *x.dims() {
            [_, c, h, w]
                if c == self.config.in_channels && h % f == 0 && w % f == 0 && h > 0 && w > 0 =>
            {
                Ok(())
            }
            _ => Err(Error::shape(
                "AutoencoderKl::encode",
                format!(
                    "(B, {}, H, W) with H and W positive multiples of {f}",
                    self.config.in_channels
                ),
                x.dims(),
            )),
        }
    }

    fn check_latents(&self, z: &Tensor) -> Result<()> {
        match *z.dims() {
            [_, c, h, w] if c == self.config.latent_channels && h > 0 && w > 0 => Ok(()),
            _ => Err(Error::shape(
                "AutoencoderKl::decode",
                format!("(B, {}, h, w)", self.config.latent_channels),
                z.dims(),
            )),
        }
    }

    /// Posterior `q(z|x)` for images in `[−1, 1]` (diffusers `encode(x).latent_dist`),
    /// in inference mode; differentiable in the weights and the input.
    pub fn encode_raw(&self, x: &Tensor) -> Result<DiagonalGaussian> {
        self.encode_raw_t(x, false)
    }

    /// [`encode_raw`](Self::encode_raw) with dropout active when `train`.
    pub fn encode_raw_t(&self, x: &Tensor, train: bool) -> Result<DiagonalGaussian> {
        self.check_images(x)?;
        self.net.encode(x, train)
    }

    /// Decodes latents `(B, C, h, w)` to images nominally in `[−1, 1]` (unclamped;
    /// diffusers `decode(z).sample`), in inference mode; differentiable.
    pub fn decode_raw(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_raw_t(z, false)
    }

    /// [`decode_raw`](Self::decode_raw) with dropout active when `train`.
    pub fn decode_raw_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        self.check_latents(z)?;
        self.net.decode(z, train)
    }

    /// [`encode_raw`](Self::encode_raw) through the detached weights: the same values, no
    /// graph recorded for the weights (inference; see the type doc).
    pub fn encode_raw_frozen(&self, x: &Tensor) -> Result<DiagonalGaussian> {
        self.check_images(x)?;
        self.frozen.encode(x, false)
    }

    /// [`decode_raw`](Self::decode_raw) through the detached weights (inference).
    pub fn decode_raw_frozen(&self, z: &Tensor) -> Result<Tensor> {
        self.check_latents(z)?;
        self.frozen.decode(z, false)
    }
}

/// Checks that a tensor holds only finite values (one reduction).
pub(crate) fn check_finite(what: &'static str, x: &Tensor) -> Result<()> {
    let sum = x.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    if sum.is_finite() {
        Ok(())
    } else {
        Err(Error::Data(format!(
            "{what}: input of shape {:?} has NaN or infinite values",
            x.dims()
        )))
    }
}

impl LatentCodec for AutoencoderKl {
    fn encode_posterior(&self, images: &Tensor) -> candle_core::Result<DiagonalGaussian> {
        check_finite("AutoencoderKl::encode_posterior", images)?;
        let x = images.affine(2.0, -1.0)?.to_dtype(self.dtype)?;
        let posterior = self.encode_raw_frozen(&x)?;
        if self.dtype == images.dtype() {
            return Ok(posterior);
        }
        // The moments leave the half-precision network in the caller's dtype.
        let dtype = images.dtype();
        DiagonalGaussian::new(
            posterior.mean.to_dtype(dtype)?,
            posterior.logvar.to_dtype(dtype)?,
        )
        .map_err(|e| Error::from(e).into())
    }

    fn decode(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        check_finite("AutoencoderKl::decode", latents)?;
        let x = self
            .decode_raw_frozen(&latents.to_dtype(self.dtype)?)?
            .to_dtype(latents.dtype())?;
        x.affine(0.5, 0.5)?.clamp(0.0, 1.0)
    }

    fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }

    fn downsample_factor(&self) -> usize {
        self.config.downsample_factor()
    }
}
