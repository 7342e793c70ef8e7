//! The posterior `q(z|x)` of a KL autoencoder, a diagonal Gaussian.
//!
//! It is defined in [`diffad_nn::latent`], beside the [`LatentCodec`](crate::LatentCodec)
//! trait that returns it, so the diffusion crate can use both without depending on this
//! one; this module keeps the old paths (`diffad_vae::distribution::*`) working.

pub use diffad_nn::latent::{standard_normal, DiagonalGaussian, LOGVAR_MAX, LOGVAR_MIN};
