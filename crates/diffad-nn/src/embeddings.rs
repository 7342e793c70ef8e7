//! Timestep embeddings (diffusers `Timesteps` / `get_timestep_embedding` and
//! `TimestepEmbedding`).
//!
//! For `half = dim / 2` and `k = 0..half`:
//! `freq_k = exp(-ln(max_period) · k / (half - downscale_freq_shift))`,
//! `e = [sin(scale · t · freq), cos(scale · t · freq)]` (or `[cos, sin]` with
//! `flip_sin_to_cos`), zero-padded by one column when `dim` is odd. Computed in `f32` in the
//! same order as diffusers, so large timesteps agree to `f32` rounding.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::linear::{linear, Linear};

/// Sinusoidal embedding of per-sample timesteps (diffusers `Timesteps`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timesteps {
    /// Embedding width.
    pub num_channels: usize,
    /// Put the cosines first (UNet2DModel's default `flip_sin_to_cos=True`).
    pub flip_sin_to_cos: bool,
    /// The `downscale_freq_shift` of the frequency denominator (UNet2DModel default 0;
    /// diffusers' `Timesteps` default 1).
    pub downscale_freq_shift: f64,
    /// Multiplier of the arguments (diffusers default 1).
    pub scale: f64,
    /// The longest period (diffusers default 10000).
    pub max_period: f64,
}

impl Timesteps {
    /// `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift)` with scale 1 and
    /// max period 10000.
    pub fn new(num_channels: usize, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Self {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
            scale: 1.0,
            max_period: 10000.0,
        }
    }

    /// Embeds `timesteps` `(B)` (any numeric dtype) into `(B, num_channels)` `f32` on the
    /// same device.
    pub fn forward(&self, timesteps: &Tensor) -> Result<Tensor> {
        let b = timesteps
            .dims1()
            .map_err(|_| Error::shape("Timesteps", "timesteps (B)", timesteps.dims()))?;
        let half = self.num_channels / 2;
        if half == 0 {
            return Err(Error::config(
                "Timesteps",
                "num_channels must be at least 2",
            ));
        }
        if half as f64 - self.downscale_freq_shift == 0.0 {
            return Err(Error::config(
                "Timesteps",
                "half the channels equals downscale_freq_shift (division by zero)",
            ));
        }
        let ln_max = (self.max_period as f32).ln();
        let denom = half as f32 - self.downscale_freq_shift as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|k| (-ln_max * k as f32 / denom).exp())
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), &Device::Cpu)?;
        let t = timesteps
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .reshape((b, 1))?;
        let args = (t.broadcast_mul(&freqs)? * self.scale)?;
        let (sin, cos) = (args.sin()?, args.cos()?);
        let emb = if self.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], 1)?
        } else {
            Tensor::cat(&[sin, cos], 1)?
        };
        let emb = if self.num_channels % 2 == 1 {
            emb.pad_with_zeros(1, 0, 1)?
        } else {
            emb
        };
        Ok(emb.to_device(timesteps.device())?)
    }
}

/// Two-layer MLP on the sinusoidal embedding (diffusers `TimestepEmbedding`):
/// `linear_2(silu(linear_1(e)))`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// Maps `e` `(B, in_channels)` to `(B, time_embed_dim)`.
    pub fn forward(&self, e: &Tensor) -> Result<Tensor> {
        let h = crate::norm::silu(&self.linear_1.forward(e)?)?;
        self.linear_2.forward(&h)
    }
}

impl candle_core::Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        TimestepEmbedding::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// Builds a [`TimestepEmbedding`] (`linear_1`: `in -> dim`, `linear_2`: `dim -> dim`).
pub fn timestep_embedding(
    in_channels: usize,
    time_embed_dim: usize,
    vb: VarBuilder,
) -> Result<TimestepEmbedding> {
    Ok(TimestepEmbedding {
        linear_1: linear(in_channels, time_embed_dim, vb.pp("linear_1"))?,
        linear_2: linear(time_embed_dim, time_embed_dim, vb.pp("linear_2"))?,
    })
}
