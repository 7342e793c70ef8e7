//! The noise predictor `eps_theta(z_t, t, c)`: diffusers' `UNet2DModel`, built from the
//! shared blocks of `diffad-nn` with the same parameter names, so a diffusers
//! `diffusion_pytorch_model.safetensors` loads without renaming.
//!
//! ```text
//! emb   = time_embedding(time_proj(t))               sinusoidal (flip_sin_to_cos) + 2-layer MLP
//! h     = conv_in(x)                                 x = [z_t, c] on channels (paper Sec. 3.3)
//! down  : per level, layers_per_block x (ResnetBlock2D(h, emb) [+ Attention]),
//!         then a stride-2 conv (not on the last level); every output is kept as a skip
//! mid   : ResnetBlock2D, Attention, ResnetBlock2D
//! up    : per level (deepest first), layers_per_block + 1 x
//!         (ResnetBlock2D([h, skip], emb) [+ Attention]), then nearest x2 + conv
//! out   = conv_out(silu(conv_norm_out(h)))
//! ```
//!
//! Parameter names: `time_embedding.linear_{1,2}`, `conv_in`,
//! `down_blocks.N.resnets.M`, `down_blocks.N.attentions.M`, `down_blocks.N.downsamplers.0.conv`,
//! `mid_block.{resnets,attentions}.M`, `up_blocks.N.resnets.M`, `up_blocks.N.attentions.M`,
//! `up_blocks.N.upsamplers.0.conv`, `conv_norm_out`, `conv_out`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use diffad_nn::{
    attention, conv2d, downsample2d, group_norm, resnet_block2d, timestep_embedding,
    unet_mid_block2d, upsample2d, Attention, AttentionConfig, Conv2d, Conv2dConfig, Downsample2D,
    GroupNorm, ResnetBlock2D, ResnetBlock2DConfig, TimestepEmbedding, Timesteps, UNetMidBlock2D,
    UNetMidBlock2DConfig, Upsample2D,
};
use serde::{Deserialize, Serialize};

use crate::denoiser::Denoiser;
use crate::error::{file_error, Error, Result};

/// Hyper-parameters of a [`UNet`] (diffusers `UNet2DModel` arguments; level `i` of
/// `attention` selects `AttnDownBlock2D` / `AttnUpBlock2D` over `DownBlock2D` / `UpBlock2D`,
/// and the up blocks mirror the down blocks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Input channels: latent channels plus condition channels (4 + 4 in DiffAD).
    pub in_channels: usize,
    /// Output channels (the latent channels, 4).
    pub out_channels: usize,
    /// Width of each level (`block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Whether each level has self-attention after its res blocks.
    pub attention: Vec<bool>,
    /// Res blocks per down level (`layers_per_block`; up levels have one more).
    pub layers_per_block: usize,
    /// Channels per attention head (`attention_head_dim`).
    pub attention_head_dim: usize,
    /// Group-norm groups (`norm_num_groups`).
    pub norm_num_groups: usize,
    /// Group-norm epsilon (`norm_eps`, diffusers default 1e-5).
    pub norm_eps: f64,
    /// Cosine first in the sinusoidal embedding (`flip_sin_to_cos`, default true).
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the embedding (`freq_shift`, default 0).
    pub freq_shift: f64,
    /// Width of the time embedding; `None` means `4 * block_out_channels[0]`.
    pub time_embedding_dim: Option<usize>,
    /// Whether the mid block has attention (`add_attention`).
    pub mid_block_attention: bool,
    /// Dropout of the res blocks while training.
    pub dropout: f64,
}

impl UNetConfig {
    /// DiffAD's denoiser (`docs/reference.md` §3): in 8 (4 latent + 4 condition), out 4,
    /// widths 256/512/1024, 2 res blocks per level, attention at every level and in the mid
    /// block, 32 channels per head; 257.7M parameters.
    pub fn diffad() -> Self {
        Self {
            in_channels: 8,
            out_channels: 4,
            block_out_channels: vec![256, 512, 1024],
            attention: vec![true, true, true],
            layers_per_block: 2,
            attention_head_dim: 32,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            time_embedding_dim: None,
            mid_block_attention: true,
            dropout: 0.0,
        }
    }

    /// A small conditional denoiser for tests and examples: in 8, out 4, widths 32/64,
    /// one res block per level, attention on the second level, 8 groups, heads of 16
    /// (704,228 parameters).
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![32, 64],
            attention: vec![false, true],
            layers_per_block: 1,
            attention_head_dim: 16,
            norm_num_groups: 8,
            ..Self::diffad()
        }
    }

    /// The same configuration without condition channels (`in_channels = out_channels`),
    /// for unconditional models ([`crate::ConditionMode::Unconditional`] and
    /// [`crate::ConditionMode::ForwardReverse`]).
    pub fn unconditional(mut self) -> Self {
        self.in_channels = self.out_channels;
        self
    }

    /// The width of the time embedding.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels.first().copied().unwrap_or(0))
    }

    /// How much the spatial size shrinks at the bottom (`2^(levels - 1)`); inputs must be
    /// multiples of it.
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Reads a diffusers `UNet2DModel` `config.json` (positional time embedding,
    /// `UNetMidBlock2D`, `conv` resampling, `silu`, `default` time-embedding norm only).
    pub fn from_diffusers_json(json: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::config("UNet", format!("config JSON: {e}")))?;
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        let usize_of = |k: &str, default: Option<usize>| -> Result<usize> {
            match get(k) {
                Some(x) => x
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| Error::config("UNet", format!("`{k}` must be an integer"))),
                None => default.ok_or_else(|| Error::config("UNet", format!("missing `{k}`"))),
            }
        };
        let f64_of = |k: &str, default: f64| -> Result<f64> {
            match get(k) {
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| Error::config("UNet", format!("`{k}` must be a number"))),
                None => Ok(default),
            }
        };
        let str_is = |k: &str, allowed: &str| -> Result<()> {
            match get(k).and_then(|x| x.as_str()) {
                Some(s) if s != allowed => Err(Error::config(
                    "UNet",
                    format!("`{k}` = {s:?} is not supported (only {allowed:?})"),
                )),
                _ => Ok(()),
            }
        };
        str_is("time_embedding_type", "positional")?;
        str_is("mid_block_type", "UNetMidBlock2D")?;
        str_is("downsample_type", "conv")?;
        str_is("upsample_type", "conv")?;
        str_is("act_fn", "silu")?;
        str_is("resnet_time_scale_shift", "default")?;
        if get("class_embed_type").is_some() || get("num_class_embeds").is_some() {
            return Err(Error::config("UNet", "class embeddings are not supported"));
        }
        if get("center_input_sample").and_then(|x| x.as_bool()) == Some(true) {
            return Err(Error::config(
                "UNet",
                "center_input_sample is not supported",
            ));
        }
        if usize_of("downsample_padding", Some(1))? != 1 {
            return Err(Error::config(
                "UNet",
                "only downsample_padding = 1 is supported",
            ));
        }
        if f64_of("mid_block_scale_factor", 1.0)? != 1.0 {
            return Err(Error::config(
                "UNet",
                "only mid_block_scale_factor = 1 is supported",
            ));
        }
        if get("attn_norm_num_groups").is_some() {
            return Err(Error::config(
                "UNet",
                "attn_norm_num_groups is not supported",
            ));
        }
        let strings = |k: &str| -> Result<Vec<String>> {
            get(k)
                .and_then(|x| x.as_array())
                .ok_or_else(|| Error::config("UNet", format!("missing list `{k}`")))?
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| Error::config("UNet", format!("`{k}` must hold strings")))
                })
                .collect()
        };
        let block_out_channels: Vec<usize> = get("block_out_channels")
            .and_then(|x| x.as_array())
            .ok_or_else(|| Error::config("UNet", "missing `block_out_channels`"))?
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| Error::config("UNet", "`block_out_channels` must hold integers"))
            })
            .collect::<Result<_>>()?;
        let down = strings("down_block_types")?;
        let up = strings("up_block_types")?;
        let attention = down
            .iter()
            .map(|s| match s.as_str() {
                "AttnDownBlock2D" => Ok(true),
                "DownBlock2D" => Ok(false),
                other => Err(Error::config(
                    "UNet",
                    format!("down block {other:?} is not supported"),
                )),
            })
            .collect::<Result<Vec<bool>>>()?;
        let up_attention = up
            .iter()
            .map(|s| match s.as_str() {
                "AttnUpBlock2D" => Ok(true),
                "UpBlock2D" => Ok(false),
                other => Err(Error::config(
                    "UNet",
                    format!("up block {other:?} is not supported"),
                )),
            })
            .collect::<Result<Vec<bool>>>()?;
        let mirrored: Vec<bool> = attention.iter().rev().copied().collect();
        if up_attention != mirrored {
            return Err(Error::config(
                "UNet",
                "up blocks must mirror the down blocks (attention on the same levels)",
            ));
        }
        let config = Self {
            in_channels: usize_of("in_channels", Some(3))?,
            out_channels: usize_of("out_channels", Some(3))?,
            attention,
            layers_per_block: usize_of("layers_per_block", Some(2))?,
            attention_head_dim: usize_of("attention_head_dim", Some(8))?,
            norm_num_groups: usize_of("norm_num_groups", Some(32))?,
            norm_eps: f64_of("norm_eps", 1e-5)?,
            flip_sin_to_cos: get("flip_sin_to_cos")
                .and_then(|x| x.as_bool())
                .unwrap_or(true),
            freq_shift: f64_of("freq_shift", 0.0)?,
            time_embedding_dim: get("time_embedding_dim")
                .map(|x| {
                    x.as_u64().map(|n| n as usize).ok_or_else(|| {
                        Error::config("UNet", "`time_embedding_dim` must be an integer")
                    })
                })
                .transpose()?,
            mid_block_attention: get("add_attention")
                .and_then(|x| x.as_bool())
                .unwrap_or(true),
            dropout: f64_of("dropout", 0.0)?,
            block_out_channels,
        };
        config.validate()?;
        Ok(config)
    }

    /// The diffusers `UNet2DModel` config JSON of this configuration.
    pub fn to_diffusers_json(&self) -> String {
        let down: Vec<&str> = self
            .attention
            .iter()
            .map(|&a| if a { "AttnDownBlock2D" } else { "DownBlock2D" })
            .collect();
        let up: Vec<&str> = self
            .attention
            .iter()
            .rev()
            .map(|&a| if a { "AttnUpBlock2D" } else { "UpBlock2D" })
            .collect();
        let v = serde_json::json!({
            "_class_name": "UNet2DModel",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "block_out_channels": self.block_out_channels,
            "down_block_types": down,
            "up_block_types": up,
            "mid_block_type": "UNetMidBlock2D",
            "layers_per_block": self.layers_per_block,
            "attention_head_dim": self.attention_head_dim,
            "norm_num_groups": self.norm_num_groups,
            "norm_eps": self.norm_eps,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
            "time_embedding_type": "positional",
            "time_embedding_dim": self.time_embedding_dim,
            "add_attention": self.mid_block_attention,
            "dropout": self.dropout,
            "downsample_padding": 1,
            "downsample_type": "conv",
            "upsample_type": "conv",
            "act_fn": "silu",
            "resnet_time_scale_shift": "default",
            "mid_block_scale_factor": 1,
            "center_input_sample": false,
        });
        // A json! value of plain literals always serialises.
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Checks that the configuration can be built.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::config("UNet", reason));
        if self.block_out_channels.is_empty() {
            return bad("block_out_channels is empty".into());
        }
        if self.attention.len() != self.block_out_channels.len() {
            return bad(format!(
                "{} attention flags for {} levels",
                self.attention.len(),
                self.block_out_channels.len()
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.layers_per_block == 0 {
            return bad("in_channels, out_channels and layers_per_block must be > 0".into());
        }
        for &c in &self.block_out_channels {
            if self.norm_num_groups == 0 || c % self.norm_num_groups != 0 {
                return bad(format!(
                    "width {c} is not divisible by {} groups",
                    self.norm_num_groups
                ));
            }
        }
        let attn_widths = self
            .block_out_channels
            .iter()
            .zip(&self.attention)
            .filter(|(_, &a)| a)
            .map(|(c, _)| *c)
            .chain(
                self.mid_block_attention
                    .then(|| *self.block_out_channels.last().unwrap_or(&0)),
            );
        for c in attn_widths {
            if self.attention_head_dim == 0 || c % self.attention_head_dim != 0 {
                return bad(format!(
                    "width {c} is not divisible by the head width {}",
                    self.attention_head_dim
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// One down level: res blocks, optional attentions, optional stride-2 conv.
#[derive(Debug, Clone)]
struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
    downsampler: Option<Downsample2D>,
}

/// One up level: res blocks on `[h, skip]`, optional attentions, optional upsampler.
#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
    upsampler: Option<Upsample2D>,
}

/// diffusers' `UNet2DModel` (see the module documentation).
#[derive(Debug, Clone)]
pub struct UNet {
    config: UNetConfig,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// The weights' dtype (`vb.dtype()` at construction).
    dtype: DType,
}

impl UNet {
    /// Builds the network from `vb` (a `VarMap`-backed builder to train, or safetensors
    /// weights to load).
    ///
    /// Dropout (when `config.dropout > 0`) draws from one stream per res block, keyed by
    /// the block's position so the blocks' masks differ: `100 i + j` for res block `j` of
    /// down level `i`, `10_000 + k` for res block `k` of the mid block, and
    /// `20_000 + 100 i + j` for res block `j` of up level `i`.
    pub fn new(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let dtype = vb.dtype();
        let widths = &config.block_out_channels;
        let levels = widths.len();
        let temb = config.time_embed_dim();
        let (groups, eps) = (config.norm_num_groups, config.norm_eps);
        let resnet_cfg = |cin: usize, cout: usize, seed: u64| ResnetBlock2DConfig {
            temb_channels: Some(temb),
            groups,
            eps,
            dropout: config.dropout,
            dropout_seed: seed,
            ..ResnetBlock2DConfig::new(cin, cout)
        };
        let attn_cfg = |c: usize| AttentionConfig {
            norm_groups: Some(groups),
            eps,
            ..AttentionConfig::new(c, config.attention_head_dim)
        };

        let time_proj = Timesteps::new(widths[0], config.flip_sin_to_cos, config.freq_shift);
        let time_embedding = timestep_embedding(widths[0], temb, vb.pp("time_embedding"))?;
        let conv_in = conv2d(
            config.in_channels,
            widths[0],
            3,
            Conv2dConfig::padded(1),
            vb.pp("conv_in"),
        )?;

        let mut down_blocks = Vec::with_capacity(levels);
        let mut out_c = widths[0];
        for (i, &width) in widths.iter().enumerate() {
            let vb_b = vb.pp("down_blocks").pp(i);
            let in_c = out_c;
            out_c = width;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..config.layers_per_block {
                let cin = if j == 0 { in_c } else { out_c };
                let seed = (i * 100 + j) as u64;
                resnets.push(resnet_block2d(
                    resnet_cfg(cin, out_c, seed),
                    vb_b.pp("resnets").pp(j),
                )?);
                if config.attention[i] {
                    attentions.push(attention(attn_cfg(out_c), vb_b.pp("attentions").pp(j))?);
                }
            }
            let downsampler = if i + 1 < levels {
                Some(downsample2d(
                    out_c,
                    out_c,
                    true,
                    1,
                    vb_b.pp("downsamplers").pp(0),
                )?)
            } else {
                None
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsampler,
            });
        }

        let deepest = widths[levels - 1];
        let mid_block = unet_mid_block2d(
            UNetMidBlock2DConfig {
                temb_channels: Some(temb),
                dropout: config.dropout,
                eps,
                groups,
                add_attention: config.mid_block_attention,
                attention_head_dim: Some(config.attention_head_dim),
                dropout_seed: 10_000,
                ..UNetMidBlock2DConfig::new(deepest)
            },
            vb.pp("mid_block"),
        )?;

        let reversed: Vec<usize> = widths.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(levels);
        let mut out_c = reversed[0];
        for (i, &width) in reversed.iter().enumerate() {
            let vb_b = vb.pp("up_blocks").pp(i);
            let prev_c = out_c;
            out_c = width;
            let skip_in = reversed[(i + 1).min(levels - 1)];
            let level = levels - 1 - i;
            let n = config.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..n {
                let skip_c = if j == n - 1 { skip_in } else { out_c };
                let cin = if j == 0 { prev_c } else { out_c };
                let seed = (20_000 + i * 100 + j) as u64;
                resnets.push(resnet_block2d(
                    resnet_cfg(cin + skip_c, out_c, seed),
                    vb_b.pp("resnets").pp(j),
                )?);
                if config.attention[level] {
                    attentions.push(attention(attn_cfg(out_c), vb_b.pp("attentions").pp(j))?);
                }
            }
            let upsampler = if i + 1 < levels {
                Some(upsample2d(out_c, out_c, true, vb_b.pp("upsamplers").pp(0))?)
            } else {
                None
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsampler,
            });
        }

        let conv_norm_out = group_norm(groups, widths[0], eps, vb.pp("conv_norm_out"))?;
        let conv_out = conv2d(
            widths[0],
            config.out_channels,
            3,
            Conv2dConfig::padded(1),
            vb.pp("conv_out"),
        )?;
        Ok(Self {
            config,
            time_proj,
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            dtype,
        })
    }

    /// Loads a diffusers `UNet2DModel` state dict (`.safetensors`, e.g. one written by
    /// [`LdmTrainer::export_unet`](crate::LdmTrainer::export_unet)) in `f32` on `device`.
    /// Tensors the network needs that the file lacks, or of the wrong shape, are an
    /// [`Error::Checkpoint`] naming the file.
    pub fn load(config: UNetConfig, path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with_dtype(config, path, DType::F32, device)
    }

    /// Loads a diffusers `UNet2DModel` folder (`config.json` and
    /// `diffusion_pytorch_model.safetensors`, as `save_pretrained` writes it) in `f32`:
    /// the architecture comes from `config.json` ([`UNetConfig::from_diffusers_json`]).
    /// A missing file is an [`Error::Io`] naming it; an unsupported `config.json` or
    /// weights that do not fit it an [`Error::Checkpoint`] naming the file at fault.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config_file = dir.join("config.json");
        let json = std::fs::read_to_string(&config_file).map_err(|source| Error::Io {
            path: config_file.clone(),
            source,
        })?;
        let config = UNetConfig::from_diffusers_json(&json)
            .map_err(|e| Error::checkpoint(&config_file, e.to_string()))?;
        let weights = dir.join("diffusion_pytorch_model.safetensors");
        if !weights.is_file() {
            return Err(Error::Io {
                path: weights,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "a diffusers UNet2DModel folder needs its weights beside config.json",
                ),
            });
        }
        Self::load(config, &weights, device)
    }

    /// [`load`](Self::load) into `dtype` (e.g. `F16` for half-precision inference).
    pub fn load_with_dtype(
        config: UNetConfig,
        path: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let file = diffad_nn::checkpoint::TensorFile::read(path, device).map_err(file_error)?;
        let vb = VarBuilder::from_tensors(file.tensors.into_iter().collect(), dtype, device);
        Self::new(config, vb).map_err(|e| Error::checkpoint(path, e.to_string()))
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The weights' dtype: `F32`, or `BF16`/`F16` when loaded for half-precision
    /// inference ([`load_with_dtype`](Self::load_with_dtype)).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `eps_theta(x, t)`: `x` `(B, in_channels, H, W)` with `H`, `W` multiples of
    /// [`UNetConfig::downsample_factor`]; `timesteps` `(B)` of any numeric dtype (integer
    /// steps `0..T`, as diffusers; converted to `f32`). `train` enables dropout.
    pub fn forward(&self, x: &Tensor, timesteps: &Tensor, train: bool) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4().map_err(|_| {
            Error::shape(
                "UNet",
                format!("(B, {}, H, W)", self.config.in_channels),
                x.dims(),
            )
        })?;
        let f = self.config.downsample_factor();
        if c != self.config.in_channels || h % f != 0 || w % f != 0 || h == 0 || w == 0 {
            return Err(Error::shape(
                "UNet",
                format!(
                    "(B, {}, H, W) with H and W non-zero multiples of {f}",
                    self.config.in_channels
                ),
                x.dims(),
            ));
        }
        if timesteps.dims() != [b] {
            return Err(Error::shape(
                "UNet timesteps",
                format!("({b})"),
                timesteps.dims(),
            ));
        }
        // One timestep for the whole batch (every sampler step): embed it once, so each
        // sample's result is the one it has in a batch of one (the embedding MLP and the
        // res blocks' projections are matrix products whose rounding depends on the
        // number of rows).
        let steps = timesteps.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let shared = steps.windows(2).all(|w| w[0] == w[1]);
        let timesteps = if shared && b > 1 {
            timesteps.narrow(0, 0, 1)?
        } else {
            timesteps.clone()
        };
        let t_emb = self.time_proj.forward(&timesteps)?.to_dtype(x.dtype())?;
        let emb = self.time_embedding.forward(&t_emb)?;

        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(&h, Some(&emb), train)?;
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(down) = &block.downsampler {
                h = down.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid_block.forward(&h, Some(&emb), train)?;
        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::config("UNet", "skip connections exhausted"))?;
                h = Tensor::cat(&[&h, &skip], 1)?;
                h = resnet.forward(&h, Some(&emb), train)?;
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(up) = &block.upsampler {
                h = up.forward(&h)?;
            }
        }
        let h = diffad_nn::silu(&self.conv_norm_out.forward(&h)?)?;
        Ok(self.conv_out.forward(&h)?)
    }
}

impl Denoiser for UNet {
    /// Concatenates `[z_t, condition]` on channels and runs [`UNet::forward`] in inference
    /// mode. `t` is `(B)` of integer timesteps in any numeric dtype (`u32`, `i64`, `f32`).
    ///
    /// The network runs in its weights' [`dtype`](UNet::dtype); the prediction comes back
    /// in `z_t`'s, so a half-precision UNet leaves the sampler's arithmetic in `f32`.
    fn predict(
        &self,
        z_t: &Tensor,
        t: &Tensor,
        condition: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let x = concat_condition(z_t, condition, self.config.in_channels)?.to_dtype(self.dtype)?;
        self.forward(&x, t, false)?.to_dtype(z_t.dtype())
    }
}

/// `[z_t, c]` along channels, checking that the result has `in_channels` channels and that
/// `c` matches `z_t`'s batch and spatial size.
pub fn concat_condition(
    z_t: &Tensor,
    condition: Option<&Tensor>,
    in_channels: usize,
) -> Result<Tensor> {
    let (b, cz, h, w) = z_t
        .dims4()
        .map_err(|_| Error::shape("denoiser input z_t", "(B, C, h, w)", z_t.dims()))?;
    let x = match condition {
        Some(c) => {
            let (cb, cc, ch, cw) = c
                .dims4()
                .map_err(|_| Error::shape("condition", format!("({b}, Cc, {h}, {w})"), c.dims()))?;
            if (cb, ch, cw) != (b, h, w) || cz + cc != in_channels {
                return Err(Error::shape(
                    "condition",
                    format!("({b}, {}, {h}, {w})", in_channels.saturating_sub(cz)),
                    c.dims(),
                ));
            }
            Tensor::cat(&[z_t, c], 1)?
        }
        None => {
            if cz != in_channels {
                return Err(Error::shape(
                    "denoiser input z_t (no condition given)",
                    format!("({b}, {in_channels}, {h}, {w})"),
                    z_t.dims(),
                ));
            }
            z_t.clone()
        }
    };
    Ok(x)
}
