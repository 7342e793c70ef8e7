//! The latent interface shared by the autoencoder and the diffusion model: the
//! [`LatentCodec`] trait (an image ↔ latent codec, the `E` and `D` of the paper's §3.2) and
//! the posterior it returns, a [`DiagonalGaussian`].
//!
//! They live here, below both model crates, so `diffad-vae` implements the trait and
//! `diffad-diffusion` (training on images) and the pipeline use it without one model crate
//! depending on the other.
//!
//! The posterior `q(z|x)` of a KL autoencoder is a diagonal Gaussian. The encoder's moments
//! `(B, 2C, h, w)` are split along the channels into the mean `μ` and the log-variance
//! `log σ²` (clamped to `[-30, 20]`, as diffusers' `DiagonalGaussianDistribution` and LDM
//! do, so `exp` stays finite). Then
//!
//! * `sample = μ + σ ⊙ ε` with `ε ~ N(0, I)` (the reparameterisation trick),
//! * `mode = μ`,
//! * `KL(q ‖ N(0, I)) = ½ Σ_{c,h,w} (μ² + σ² − 1 − log σ²)`, one value per image.
//!
//! The noise `ε` is drawn on the CPU from a seeded ChaCha8 stream and moved to the device,
//! so a sample depends only on the seed, never on the device or thread count.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use diffad_nn::latent::DiagonalGaussian;
//!
//! // moments (1, 2C = 8, 2, 2): mean 0, log-variance 0
//! let moments = Tensor::zeros((1, 8, 2, 2), DType::F32, &Device::Cpu)?;
//! let q = DiagonalGaussian::from_moments(&moments)?;
//! assert_eq!(q.mode().dims(), &[1, 4, 2, 2]);
//! assert_eq!(q.kl()?.to_vec1::<f32>()?, vec![0.0]); // q = N(0, I)
//! # Ok::<(), diffad_nn::Error>(())
//! ```

use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};

/// An image ↔ latent codec (paper §3.2: the `E` and `D` of the LDM).
///
/// Images are `(B, 3, H, W)` with values in `[0, 1]`; implementations map them to
/// whatever range their network expects (diffad-vae's `AutoencoderKl` uses `[−1, 1]`).
pub trait LatentCodec {
    /// Posterior `q(z|x)` for images `(B, 3, H, W)` with values in `[0, 1]`.
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

/// Lower clamp of the log-variance (diffusers / LDM).
pub const LOGVAR_MIN: f64 = -30.0;
/// Upper clamp of the log-variance (diffusers / LDM).
pub const LOGVAR_MAX: f64 = 20.0;

/// A diagonal Gaussian `N(μ, diag σ²)` over latents `(B, C, h, w)`.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// Mean `μ` `(B, C, h, w)`.
    pub mean: Tensor,
    /// Log-variance `log σ²` `(B, C, h, w)`, clamped to `[-30, 20]`.
    pub logvar: Tensor,
    /// Standard deviation `σ = exp(½ log σ²)`.
    pub std: Tensor,
    /// Variance `σ² = exp(log σ²)`.
    pub var: Tensor,
}

impl DiagonalGaussian {
    /// Builds the distribution from encoder moments `(B, 2C, h, w)`: the first `C`
    /// channels are the mean, the last `C` the (unclamped) log-variance.
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let dims = moments.dims();
        let channels = match *dims {
            [_, c, _, _] if c % 2 == 0 && c > 0 => c / 2,
            _ => {
                return Err(Error::shape(
                    "DiagonalGaussian::from_moments",
                    "(B, 2C, h, w)",
                    dims,
                ))
            }
        };
        let mean = moments.narrow(1, 0, channels)?;
        let logvar = moments.narrow(1, channels, channels)?;
        Self::new(mean, logvar)
    }

    /// Builds the distribution from a mean and an (unclamped) log-variance of equal shape.
    pub fn new(mean: Tensor, logvar: Tensor) -> Result<Self> {
        if mean.dims() != logvar.dims() || mean.rank() != 4 {
            return Err(Error::shape(
                "DiagonalGaussian::new",
                format!("a log-variance of the mean's 4-D shape {:?}", mean.dims()),
                logvar.dims(),
            ));
        }
        let logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)?;
        let std = (&logvar * 0.5)?.exp()?;
        let var = logvar.exp()?;
        Ok(Self {
            mean,
            logvar,
            std,
            var,
        })
    }

    /// The mode `μ`: the deterministic latent used as the condition `c = E(x)` at test time.
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }

    /// A reparameterised sample `μ + σ ⊙ ε` with the given noise `ε` (same shape as `μ`).
    /// Differentiable in `μ` and `log σ²`.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::shape(
                "DiagonalGaussian::sample",
                format!("noise of shape {:?}", self.mean.dims()),
                noise.dims(),
            ));
        }
        let noise = noise
            .to_dtype(self.mean.dtype())?
            .to_device(self.mean.device())?;
        Ok((&self.mean + (&self.std * noise)?)?)
    }

    /// A reparameterised sample whose noise is drawn from `rng` on the CPU (then moved to
    /// the mean's device), so the result is reproducible for a given RNG state.
    pub fn sample_with_rng(&self, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let noise = standard_normal(self.mean.dims(), rng, self.mean.device())?;
        self.sample(&noise)
    }

    /// A reparameterised sample with noise from `ChaCha8Rng::seed_from_u64(seed)`.
    pub fn sample_seeded(&self, seed: u64) -> Result<Tensor> {
        self.sample_with_rng(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// `KL(q ‖ N(0, I)) = ½ Σ_{c,h,w} (μ² + σ² − 1 − log σ²)`: one value per image `(B)`.
    pub fn kl(&self) -> Result<Tensor> {
        let terms = ((self.mean.sqr()? + &self.var)? - 1.0)?;
        let terms = (terms - &self.logvar)?;
        Ok((terms.flatten_from(1)?.sum(D::Minus1)? * 0.5)?)
    }

    /// Negative log-likelihood of `sample` under this distribution, per image `(B)`:
    /// `½ Σ (log 2π + log σ² + (x − μ)² / σ²)` (diffusers' `nll`).
    pub fn nll(&self, sample: &Tensor) -> Result<Tensor> {
        if sample.dims() != self.mean.dims() {
            return Err(Error::shape(
                "DiagonalGaussian::nll",
                format!("a sample of shape {:?}", self.mean.dims()),
                sample.dims(),
            ));
        }
        let log_two_pi = (2.0 * std::f64::consts::PI).ln();
        let sq = (sample - &self.mean)?.sqr()?.div(&self.var)?;
        let terms = ((&self.logvar + sq)? + log_two_pi)?;
        Ok((terms.flatten_from(1)?.sum(D::Minus1)? * 0.5)?)
    }
}

/// Standard-normal noise of the given shape, drawn in `f32` on the CPU from `rng` and moved
/// to `device`.
pub fn standard_normal(shape: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_device(device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments() -> Tensor {
        // mean = [0.5, -1], logvar = [0, 40 -> clamped to 20]
        let data = [0.5f32, -1.0, 0.0, 40.0];
        Tensor::from_slice(&data, (1, 4, 1, 1), &Device::Cpu).unwrap()
    }

    #[test]
    fn splits_and_clamps_the_moments() {
        let g = DiagonalGaussian::from_moments(&moments()).unwrap();
        let mean = g.mean.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let logvar = g.logvar.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(mean, vec![0.5, -1.0]);
        assert_eq!(logvar, vec![0.0, 20.0]);
        let std = g.std.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((std[1] - 10f32.exp()).abs() / 10f32.exp() < 1e-5);
    }

    #[test]
    fn kl_matches_the_closed_form() {
        let g = DiagonalGaussian::from_moments(&moments()).unwrap();
        let kl = g.kl().unwrap().to_vec1::<f32>().unwrap();
        // 0.5 * [(0.25 + 1 - 1 - 0) + (1 + e^20 - 1 - 20)]
        let expected = 0.5 * (0.25 + (20f64.exp() - 20.0));
        assert!(((kl[0] as f64) - expected).abs() / expected < 1e-5);
    }

    #[test]
    fn seeded_samples_are_reproducible_and_centred() {
        let mean = Tensor::zeros((2, 4, 16, 16), DType::F32, &Device::Cpu).unwrap();
        let g = DiagonalGaussian::new(mean.clone(), mean).unwrap();
        let a = g.sample_seeded(3).unwrap();
        let b = g.sample_seeded(3).unwrap();
        let c = g.sample_seeded(4).unwrap();
        let diff = |x: &Tensor, y: &Tensor| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(diff(&a, &b), 0.0);
        assert!(diff(&a, &c) > 1.0);
        let m = a.mean_all().unwrap().to_scalar::<f32>().unwrap();
        let v = a
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(m.abs() < 0.1 && (v - 1.0).abs() < 0.1, "mean {m} var {v}");
    }

    #[test]
    fn rejects_odd_channels() {
        let t = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            DiagonalGaussian::from_moments(&t),
            Err(Error::Shape { .. })
        ));
    }
}
