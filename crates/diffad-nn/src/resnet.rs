//! diffusers' `ResnetBlock2D` (the residual block of AutoencoderKL and UNet2DModel).
//!
//! ```text
//! h = conv1(silu(norm1(x)))
//! h = h + time_emb_proj(silu(temb))[:, :, None, None]      (time_embedding_norm "default")
//! h = conv2(dropout(silu(norm2(h))))
//! y = (shortcut(x) + h) / output_scale_factor
//! ```
//! With `time_embedding_norm = "scale_shift"` the projection has `2·out` outputs split into
//! `(scale, shift)` and `norm2(h)` becomes `norm2(h) · (1 + scale) + shift`. The shortcut is
//! `conv_shortcut` (1x1, or 3x3 when asked) when `in != out`, the identity otherwise.
//! Parameter names: `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`, `conv_shortcut`.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::conv::{conv2d, Conv2d, Conv2dConfig};
use crate::dropout::Dropout;
use crate::error::{expect_nchw, Error, Result};
use crate::linear::{linear, Linear};
use crate::norm::{group_norm, GroupNorm};

/// How the time embedding enters a [`ResnetBlock2D`] (diffusers' `time_embedding_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeEmbeddingNorm {
    /// Added to the features after `conv1` (`"default"`).
    #[default]
    Default,
    /// Scale and shift of `norm2`'s output (`"scale_shift"`).
    ScaleShift,
}

/// Hyper-parameters of a [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResnetBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Width of the time embedding, `None` for blocks without one (the VAE).
    pub temb_channels: Option<usize>,
    /// Groups of `norm1` (diffusers default 32).
    pub groups: usize,
    /// Groups of `norm2`; `None` means `groups`.
    pub groups_out: Option<usize>,
    /// Epsilon of both norms (diffusers default 1e-6).
    pub eps: f64,
    /// Dropout probability before `conv2`.
    pub dropout: f64,
    /// The output is divided by this (diffusers default 1.0).
    pub output_scale_factor: f64,
    /// How the time embedding is applied.
    pub time_embedding_norm: TimeEmbeddingNorm,
    /// Use a shortcut convolution; `None` means "when `in != out`" (diffusers'
    /// `use_in_shortcut`).
    pub use_in_shortcut: Option<bool>,
    /// Make the shortcut a 3x3 convolution instead of 1x1 (diffusers' `conv_shortcut`).
    pub conv_shortcut_3x3: bool,
    /// Seed of the dropout mask stream (mixed with nothing else; give blocks different
    /// seeds if their masks must differ).
    pub dropout_seed: u64,
}

impl ResnetBlock2DConfig {
    /// diffusers' defaults for an `in -> out` block without time embedding: 32 groups,
    /// eps 1e-6, no dropout, output scale 1.
    pub fn new(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            temb_channels: None,
            groups: 32,
            groups_out: None,
            eps: 1e-6,
            dropout: 0.0,
            output_scale_factor: 1.0,
            time_embedding_norm: TimeEmbeddingNorm::Default,
            use_in_shortcut: None,
            conv_shortcut_3x3: false,
            dropout_seed: 0,
        }
    }
}

/// diffusers' `ResnetBlock2D` (see the module doc).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    config: ResnetBlock2DConfig,
}

impl ResnetBlock2D {
    /// The block's hyper-parameters.
    pub fn config(&self) -> &ResnetBlock2DConfig {
        &self.config
    }

    /// Applies the block to `x` `(B, in, H, W)` with an optional time embedding `temb`
    /// `(B, temb_channels)`, or `(1, temb_channels)` shared by the whole batch (one
    /// timestep for every sample: the projection then runs once, so a sample's result does
    /// not depend on the batch size); `train` turns dropout on.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (b, _, _, _) = expect_nchw("ResnetBlock2D", x, self.config.in_channels)?;
        let h = self.norm1.forward_silu(x)?;
        let h = self.conv1.forward(&h)?;
        let temb = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => {
                let tc = proj.in_features();
                if t.dims() != [b, tc] && t.dims() != [1, tc] {
                    return Err(Error::shape(
                        "ResnetBlock2D",
                        format!("temb ({b}, {tc})"),
                        t.dims(),
                    ));
                }
                Some(
                    proj.forward(&crate::norm::silu(t)?)?
                        .unsqueeze(2)?
                        .unsqueeze(3)?,
                )
            }
            (None, Some(t)) => {
                return Err(Error::shape(
                    "ResnetBlock2D",
                    "no time embedding (block built without temb_channels)",
                    t.dims(),
                ))
            }
            (_, None) => None,
        };
        // norm2 then SiLU, fused where nothing comes between them.
        let h = match (self.config.time_embedding_norm, &temb) {
            (TimeEmbeddingNorm::Default, Some(t)) => {
                let h = h.broadcast_add(t)?;
                self.norm2.forward_silu(&h)?
            }
            (TimeEmbeddingNorm::ScaleShift, Some(t)) => {
                let out = self.config.out_channels;
                let scale = t.narrow(1, 0, out)?;
                let shift = t.narrow(1, out, out)?;
                let h = self
                    .norm2
                    .forward(&h)?
                    .broadcast_mul(&(scale + 1.0)?)?
                    .broadcast_add(&shift)?;
                crate::norm::silu(&h)?
            }
            (_, None) => self.norm2.forward_silu(&h)?,
        };
        let h = self.dropout.forward(&h, train)?;
        let h = self.conv2.forward(&h)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let y = (shortcut + h)?;
        if self.config.output_scale_factor == 1.0 {
            Ok(y)
        } else {
            Ok((y / self.config.output_scale_factor)?)
        }
    }
}

/// Builds a [`ResnetBlock2D`] from `vb`.
pub fn resnet_block2d(config: ResnetBlock2DConfig, vb: VarBuilder) -> Result<ResnetBlock2D> {
    let (cin, cout) = (config.in_channels, config.out_channels);
    if config.output_scale_factor == 0.0 {
        return Err(Error::config(
            "ResnetBlock2D",
            "output_scale_factor must be non-zero",
        ));
    }
    let use_shortcut = config.use_in_shortcut.unwrap_or(cin != cout);
    if !use_shortcut && cin != cout {
        return Err(Error::config(
            "ResnetBlock2D",
            format!("{cin} -> {cout} channels need a shortcut convolution"),
        ));
    }
    let norm1 = group_norm(config.groups, cin, config.eps, vb.pp("norm1"))?;
    let conv1 = conv2d(cin, cout, 3, Conv2dConfig::padded(1), vb.pp("conv1"))?;
    let time_emb_proj = match config.temb_channels {
        Some(tc) => {
            let proj_out = match config.time_embedding_norm {
                TimeEmbeddingNorm::Default => cout,
                TimeEmbeddingNorm::ScaleShift => 2 * cout,
            };
            Some(linear(tc, proj_out, vb.pp("time_emb_proj"))?)
        }
        None => None,
    };
    let groups_out = config.groups_out.unwrap_or(config.groups);
    let norm2 = group_norm(groups_out, cout, config.eps, vb.pp("norm2"))?;
    let conv2 = conv2d(cout, cout, 3, Conv2dConfig::padded(1), vb.pp("conv2"))?;
    let conv_shortcut = if use_shortcut {
        let (k, p) = if config.conv_shortcut_3x3 {
            (3, 1)
        } else {
            (1, 0)
        };
        Some(conv2d(
            cin,
            cout,
            k,
            Conv2dConfig::padded(p),
            vb.pp("conv_shortcut"),
        )?)
    } else {
        None
    };
    Ok(ResnetBlock2D {
        norm1,
        conv1,
        time_emb_proj,
        norm2,
        dropout: Dropout::new(config.dropout, config.dropout_seed)?,
        conv2,
        conv_shortcut,
        config,
    })
}
