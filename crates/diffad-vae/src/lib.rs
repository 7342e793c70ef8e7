//! # diffad-vae: the KL autoencoder of DiffAD's latent diffusion model
//!
//! DiffAD (Zhang et al., ICCV 2023, §3.2) runs its diffusion model in the latent space of
//! a KL-regularised autoencoder: the encoder `E` maps a 256x256x3 image to a 32x32x4
//! latent (`f = 8`), the decoder `D` maps it back. This crate provides
//!
//! * [`AutoencoderKl`]: diffusers' `AutoencoderKL`, layer for layer and name for name
//!   (built from `diffad-nn`'s shared blocks), so a diffusers `safetensors` file — e.g. a
//!   Stable Diffusion VAE — loads without renaming ([`AutoencoderKl::load`]); strict,
//!   atomic safetensors I/O ([`checkpoint`]);
//! * [`AutoencoderKlConfig::diffad`] (the released `kl.yaml`) and small configs for tests;
//! * [`DiagonalGaussian`]: the posterior with `mean`, `logvar` (clamped to `[−30, 20]`),
//!   `std`, reproducible `sample`s, `mode()` and `kl()`;
//! * [`LatentCodec`]: the image ↔ latent interface the diffusion and segmentation stages
//!   use, so any codec can be plugged in;
//! * training ([`train`]): reconstruction (L1/L2) + SSIM + `kl_weight`·KL, an optional
//!   PatchGAN hinge loss from a given step ([`discriminator`]), a pluggable perceptual
//!   term ([`loss::PerceptualLoss`]; LPIPS's VGG weights cannot be shipped), our own
//!   [`AdamW`] (shared with the other trainers, from `diffad_nn::optim`) (its moments are saved in checkpoints), gradient clipping, warm-up,
//!   atomic checkpoints and exact resume;
//! * [`synthetic::synthetic_images`]: seeded toy images (gradients, stripes, discs) for
//!   examples and tests.
//!
//! Numerical equivalence with diffusers 0.42 (posterior mean, log-variance and decoded
//! image to 1e-4) is tested against committed fixtures (`scripts/make_fixtures.py`).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use diffad_vae::{AutoencoderKl, AutoencoderKlConfig, LatentCodec};
//!
//! let device = Device::Cpu;
//! let vae = AutoencoderKl::new(AutoencoderKlConfig::tiny(), 0, &device)?;
//! let images = Tensor::rand(0f32, 1f32, (1, 3, 16, 16), &device)?;
//! let latents = vae.encode(&images)?; // c = E(x): the posterior mean
//! assert_eq!(latents.dims(), &[1, 4, 8, 8]);
//! let decoded = vae.decode(&latents)?; // D(z), clamped to [0, 1]
//! assert_eq!(decoded.dims(), &[1, 3, 16, 16]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod discriminator;
pub mod distribution;
pub mod error;
pub mod loss;
pub mod model;
pub mod synthetic;
pub mod train;

use candle_core::Tensor;

pub use config::AutoencoderKlConfig;
pub use diffad_nn::checkpoint;
pub use diffad_nn::optim::{AdamW, AdamWConfig};
pub use discriminator::{PatchGan, PatchGanConfig};
pub use distribution::DiagonalGaussian;
pub use error::{Error, Result};
pub use loss::{PerceptualLoss, Reconstruction};
pub use model::{AutoencoderKl, Decoder, Encoder};
pub use train::{TrainingImages, VaeTrainConfig, VaeTrainer};

/// An image ↔ latent codec (paper §3.2: the `E` and `D` of the LDM).
///
/// Images are `(B, 3, H, W)` with values in `[0, 1]`; implementations map them to
/// whatever range their network expects (the [`AutoencoderKl`] uses `[−1, 1]`).
pub trait LatentCodec {
    /// Posterior `q(z|x)` for images `(B, 3, H, W)` with values in `[0, 1]` (mapped to
    /// `[−1, 1]` inside).
    fn encode_posterior(&self, images: &Tensor) -> candle_core::Result<DiagonalGaussian>;

    /// Posterior mode (mean): the condition `c = E(x_a)` at test time.
    fn encode(&self, images: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.encode_posterior(images)?.mode().clone())
    }

    /// Decodes latents `(B, C, h, w)` to images `(B, 3, H, W)` in `[0, 1]` (clamped).
    fn decode(&self, latents: &Tensor) -> candle_core::Result<Tensor>;

    /// Latent channels `C`.
    fn latent_channels(&self) -> usize;

    /// Spatial downsampling factor `f` (`H = f·h`).
    fn downsample_factor(&self) -> usize;
}
