//! Spatial self-attention over `(B, C, H, W)` maps (diffusers `Attention` as built by
//! `UNetMidBlock2D`, `AttnDownBlock2D`, `AttnUpBlock2D` and the VAE's mid block).
//!
//! With `h = GroupNorm(x)` flattened to `(B, HW, C)` and `heads = C / head_dim`:
//! `Q = h W_qᵀ + b_q`, `K`, `V` likewise, split into heads of width `head_dim`;
//! `O_h = softmax(Q_h K_hᵀ / sqrt(head_dim)) V_h`; `out = concat(O_h) W_oᵀ + b_o`,
//! reshaped to `(B, C, H, W)`; `y = (out + x) / rescale_output_factor`.
//!
//! Parameter names: `group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0` (diffusers'
//! current layout; the VAE and UNet2DModel checkpoints on the Hub use it).
//! The softmax has a backward (Candle's `softmax_last_dim` does not): a fused CPU kernel
//! for `f32`/`f64`, `candle_nn::ops::softmax(.., D::Minus1)` elsewhere.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::error::{expect_nchw, Error, Result};
use crate::linear::{linear_with_config, Linear, LinearConfig};
use crate::norm::{group_norm, GroupNorm};

/// Hyper-parameters of an [`Attention`] block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    /// Channels `C` of the feature map (query dim and output dim).
    pub channels: usize,
    /// Width of one head (diffusers' `attention_head_dim`; `heads = channels / head_dim`).
    /// The VAE uses `head_dim = channels` (one head).
    pub head_dim: usize,
    /// Groups of the input `group_norm`; `None` means no norm (diffusers' `norm_num_groups`).
    pub norm_groups: Option<usize>,
    /// Epsilon of the group norm (diffusers passes the resnet eps, 1e-6 in the VAE/UNet).
    pub eps: f64,
    /// The output (after the residual) is divided by this (diffusers'
    /// `rescale_output_factor`, the block's `output_scale_factor`).
    pub rescale_output_factor: f64,
    /// Add the input back (diffusers' `residual_connection`, true in these blocks).
    pub residual_connection: bool,
}

impl AttentionConfig {
    /// The config diffusers' 2-D blocks use: 32 norm groups, eps 1e-6, residual, no rescale.
    pub fn new(channels: usize, head_dim: usize) -> Self {
        Self {
            channels,
            head_dim,
            norm_groups: Some(32),
            eps: 1e-6,
            rescale_output_factor: 1.0,
            residual_connection: true,
        }
    }
}

/// Multi-head self-attention over the positions of a feature map (see the module doc).
#[derive(Debug, Clone)]
pub struct Attention {
    group_norm: Option<GroupNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    config: AttentionConfig,
    heads: usize,
}

impl Attention {
    /// The block's hyper-parameters.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Applies the block to `x` `(B, C, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.config.channels;
        let (b, _, h, w) = expect_nchw("Attention", x, c)?;
        let hw = h * w;
        let normed = match &self.group_norm {
            Some(gn) => gn.forward(x)?,
            None => x.clone(),
        };
        let tokens = normed.reshape((b, c, hw))?.transpose(1, 2)?.contiguous()?;
        let (heads, dh) = (self.heads, self.config.head_dim);
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, hw, heads, dh))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.to_q.forward(&tokens)?)?;
        let k = split(self.to_k.forward(&tokens)?)?;
        let v = split(self.to_v.forward(&tokens)?)?;
        // The 1/sqrt(d) scale is applied to Q (B·HW·C values) rather than to the scores
        // (B·heads·HW² values); the result is the same.
        let scale = 1.0 / (dh as f64).sqrt();
        let scores = (q * scale)?.matmul(&k.t()?)?;
        // diffusers upcasts the softmax of these blocks (`upcast_softmax=True`).
        let dtype = scores.dtype();
        let probs = match dtype {
            DType::F16 | DType::BF16 => {
                crate::kernels::softmax::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
                    .to_dtype(dtype)?
            }
            _ => crate::kernels::softmax::softmax_last_dim(&scores)?,
        };
        let o = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, hw, heads * dh))?;
        let o = self.to_out.forward(&o)?;
        let o = o.transpose(1, 2)?.reshape((b, c, h, w))?;
        let o = if self.config.residual_connection {
            (o + x)?
        } else {
            o
        };
        if self.config.rescale_output_factor == 1.0 {
            Ok(o)
        } else {
            Ok((o / self.config.rescale_output_factor)?)
        }
    }
}

impl candle_core::Module for Attention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Attention::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// Builds an [`Attention`] block from `vb` (names `group_norm`, `to_q`, `to_k`, `to_v`,
/// `to_out.0`, all linear layers with bias and PyTorch's default init).
pub fn attention(config: AttentionConfig, vb: VarBuilder) -> Result<Attention> {
    let c = config.channels;
    if config.head_dim == 0 || !c.is_multiple_of(config.head_dim) {
        return Err(Error::config(
            "Attention",
            format!(
                "{c} channels not divisible by head width {}",
                config.head_dim
            ),
        ));
    }
    if config.rescale_output_factor == 0.0 {
        return Err(Error::config(
            "Attention",
            "rescale_output_factor must be non-zero",
        ));
    }
    let heads = c / config.head_dim;
    let inner = heads * config.head_dim;
    let group_norm = match config.norm_groups {
        Some(g) => Some(group_norm(g, c, config.eps, vb.pp("group_norm"))?),
        None => None,
    };
    let lc = LinearConfig::default();
    Ok(Attention {
        group_norm,
        to_q: linear_with_config(c, inner, lc, vb.pp("to_q"))?,
        to_k: linear_with_config(c, inner, lc, vb.pp("to_k"))?,
        to_v: linear_with_config(c, inner, lc, vb.pp("to_v"))?,
        to_out: linear_with_config(inner, c, lc, vb.pp("to_out").pp("0"))?,
        config,
        heads,
    })
}
