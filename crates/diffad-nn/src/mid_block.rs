//! diffusers' `UNetMidBlock2D`: `resnets.0`, then `num_layers` pairs of (`attentions.i`,
//! `resnets.i+1`). Used by AutoencoderKL's encoder and decoder (no time embedding, one
//! head of width `channels`) and by UNet2DModel (time embedding, heads of
//! `attention_head_dim`).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::attention::{attention, Attention, AttentionConfig};
use crate::error::{Error, Result};
use crate::resnet::{resnet_block2d, ResnetBlock2D, ResnetBlock2DConfig, TimeEmbeddingNorm};

/// Hyper-parameters of a [`UNetMidBlock2D`] (diffusers' argument names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UNetMidBlock2DConfig {
    /// Channels in and out.
    pub channels: usize,
    /// Width of the time embedding (`None` for the VAE).
    pub temb_channels: Option<usize>,
    /// Dropout of the res blocks.
    pub dropout: f64,
    /// Number of (attention, resnet) pairs after the first resnet (diffusers default 1).
    pub num_layers: usize,
    /// Epsilon of all norms (`resnet_eps`, default 1e-6).
    pub eps: f64,
    /// Groups of the res blocks' norms (`resnet_groups`, default 32).
    pub groups: usize,
    /// Groups of the attention norm; `None` means `groups` with the default time embedding
    /// norm and no norm with scale-shift (diffusers' `attn_groups`).
    pub attn_groups: Option<usize>,
    /// Whether the block has attention layers (`add_attention`).
    pub add_attention: bool,
    /// Head width; `None` means `channels` (one head, the VAE).
    pub attention_head_dim: Option<usize>,
    /// Output scale factor of every sub-block.
    pub output_scale_factor: f64,
    /// How the res blocks apply the time embedding.
    pub time_embedding_norm: TimeEmbeddingNorm,
    /// Seed of the res blocks' dropout masks (block `i` uses `dropout_seed + i`).
    pub dropout_seed: u64,
}

impl UNetMidBlock2DConfig {
    /// diffusers' defaults for `channels` (one layer, attention with one head, 32 groups,
    /// eps 1e-6, no time embedding, no dropout).
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            temb_channels: None,
            dropout: 0.0,
            num_layers: 1,
            eps: 1e-6,
            groups: 32,
            attn_groups: None,
            add_attention: true,
            attention_head_dim: None,
            output_scale_factor: 1.0,
            time_embedding_norm: TimeEmbeddingNorm::Default,
            dropout_seed: 0,
        }
    }
}

/// diffusers' `UNetMidBlock2D` (see the module doc).
#[derive(Debug, Clone)]
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Option<Attention>>,
}

impl UNetMidBlock2D {
    /// Applies the block to `x` `(B, C, H, W)` with an optional time embedding.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let first = self
            .resnets
            .first()
            .ok_or_else(|| Error::config("UNetMidBlock2D", "no res blocks"))?;
        let mut h = first.forward(x, temb, train)?;
        for (attn, resnet) in self.attentions.iter().zip(self.resnets.iter().skip(1)) {
            if let Some(attn) = attn {
                h = attn.forward(&h)?;
            }
            h = resnet.forward(&h, temb, train)?;
        }
        Ok(h)
    }
}

/// Builds a [`UNetMidBlock2D`] from `vb` (`resnets.i`, `attentions.i`).
pub fn unet_mid_block2d(config: UNetMidBlock2DConfig, vb: VarBuilder) -> Result<UNetMidBlock2D> {
    let c = config.channels;
    let resnet_config = |i: usize| ResnetBlock2DConfig {
        temb_channels: config.temb_channels,
        groups: config.groups,
        eps: config.eps,
        dropout: config.dropout,
        output_scale_factor: config.output_scale_factor,
        time_embedding_norm: config.time_embedding_norm,
        dropout_seed: config.dropout_seed.wrapping_add(i as u64),
        ..ResnetBlock2DConfig::new(c, c)
    };
    let attn_groups = match (config.attn_groups, config.time_embedding_norm) {
        (Some(g), _) => Some(g),
        (None, TimeEmbeddingNorm::Default) => Some(config.groups),
        (None, TimeEmbeddingNorm::ScaleShift) => None,
    };
    let mut resnets = vec![resnet_block2d(resnet_config(0), vb.pp("resnets").pp("0"))?];
    let mut attentions = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        attentions.push(if config.add_attention {
            let acfg = AttentionConfig {
                channels: c,
                head_dim: config.attention_head_dim.unwrap_or(c),
                norm_groups: attn_groups,
                eps: config.eps,
                rescale_output_factor: config.output_scale_factor,
                residual_connection: true,
            };
            Some(attention(acfg, vb.pp("attentions").pp(i))?)
        } else {
            None
        });
        resnets.push(resnet_block2d(
            resnet_config(i + 1),
            vb.pp("resnets").pp(i + 1),
        )?);
    }
    Ok(UNetMidBlock2D {
        resnets,
        attentions,
    })
}
