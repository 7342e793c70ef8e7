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
//!   diffusers `config.json` reading and writing, and whole diffusers folders
//!   ([`DiffusersFolder`], [`AutoencoderKl::from_pretrained`]);
//! * [`DiagonalGaussian`]: the posterior with `mean`, `logvar` (clamped to `[−30, 20]`),
//!   `std`, reproducible `sample`s, `mode()` and `kl()`, and [`LatentCodec`]: the
//!   image ↔ latent interface the diffusion and segmentation stages use, so any codec can
//!   be plugged in (both defined in [`diffad_nn::latent`] and re-exported here);
//! * training ([`train`]): reconstruction (L1/L2) + SSIM + `kl_weight`·KL, an optional
//!   PatchGAN hinge loss from a given step ([`discriminator`]), a pluggable perceptual
//!   term ([`loss::PerceptualLoss`]; LPIPS's VGG weights cannot be shipped), our own
//!   [`AdamW`] (shared with the other trainers, from `diffad_nn::optim`; its moments are
//!   saved in checkpoints), gradient clipping, warm-up, atomic checkpoints and exact
//!   resume ([`VaeTrainer`]; progress goes to a [`diffad_nn::progress::Progress`]);
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

pub use config::{AutoencoderKlConfig, DiffusersFolder};
pub use diffad_nn::checkpoint;
/// The posterior and the image ↔ latent codec trait, defined in `diffad-nn` (so the
/// diffusion crate shares them without depending on this crate).
pub use diffad_nn::latent::{DiagonalGaussian, LatentCodec};
pub use diffad_nn::optim::{AdamW, AdamWConfig};
/// The progress callback of [`VaeTrainer::train`] (shared with the other crates).
pub use diffad_nn::progress::{Progress, Silent};
pub use discriminator::{PatchGan, PatchGanConfig};
pub use error::{Error, Result};
pub use loss::{PerceptualLoss, Reconstruction};
pub use model::{AutoencoderKl, Decoder, Encoder};
pub use train::{TrainingImages, VaeTrainConfig, VaeTrainer};
