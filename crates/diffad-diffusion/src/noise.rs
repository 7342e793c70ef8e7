//! Reproducible Gaussian noise with one random stream per sample.
//!
//! Every sample `i` of a batch draws from its own `ChaCha8Rng` keyed by
//! [`mix_seed`]`(seed, purpose)` with stream `i` ([`sample_rng`]), on the CPU, and the
//! result is moved to the target device. A sample's noise therefore depends only on
//! `(seed, purpose, i)`: not on the batch it is in, the thread count, or the device
//! (Candle's device RNG is never used).
//!
//! What separates the streams of this crate:
//!
//! * the `purpose` (a salt of [`mix_seed`], see `diffad_nn::seed` for why distinct salts
//!   give independent keys) separates what the noise is for:
//!   [`TRAIN_PURPOSE`](crate::trainer::TRAIN_PURPOSE) (a training step's `t`, `eps`,
//!   `t_c`, `eps'`), [`POSTERIOR_PURPOSE`](crate::trainer::POSTERIOR_PURPOSE) (the
//!   posterior sample `z` of the image loop) and
//!   [`RECONSTRUCT_PURPOSE`](crate::reconstruct::RECONSTRUCT_PURPOSE) (sampling);
//! * the `seed` separates runs, and in training the steps: step `s` uses
//!   [`LdmTrainer::step_seed`](crate::LdmTrainer::step_seed)`(s) = mix_seed(config.seed, s)`;
//! * the ChaCha stream index separates the samples of a batch (in [`crate::reconstruct()`]
//!   it is the sample's index in the data set, `sample_offset + i`).

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;

/// SplitMix64 mixing of a seed and a salt, defined in `diffad_nn::seed` (re-exported here
/// so the old path `diffad_diffusion::noise::mix_seed` keeps working).
pub use diffad_nn::seed::mix_seed;

/// The random stream of sample `index` for `(seed, purpose)`.
pub fn sample_rng(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, purpose));
    rng.set_stream(index);
    rng
}

/// Draws `n` standard-normal `f32` values from `rng`.
pub fn standard_normal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// A `(B, ...)` tensor of standard-normal noise, sample `b` drawn from `rngs[b]`
/// (`per_sample` is the shape of one sample), created in `dtype` on `device`.
pub fn gaussian_per_sample(
    rngs: &mut [ChaCha8Rng],
    per_sample: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = per_sample.iter().product();
    let mut data = Vec::with_capacity(n * rngs.len());
    for rng in rngs.iter_mut() {
        data.extend(standard_normal(rng, n));
    }
    let mut shape = vec![rngs.len()];
    shape.extend_from_slice(per_sample);
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_of_batching() {
        let mut batch = vec![sample_rng(7, 1, 0), sample_rng(7, 1, 1)];
        let both = gaussian_per_sample(&mut batch, &[3], DType::F32, &Device::Cpu).unwrap();
        let mut alone = vec![sample_rng(7, 1, 1)];
        let one = gaussian_per_sample(&mut alone, &[3], DType::F32, &Device::Cpu).unwrap();
        let both: Vec<Vec<f32>> = both.to_vec2().unwrap();
        let one: Vec<Vec<f32>> = one.to_vec2().unwrap();
        assert_eq!(both[1], one[0]);
        assert_ne!(both[0], both[1]);
    }

    #[test]
    fn mix_seed_is_the_shared_splitmix64() {
        // The values the streams of earlier versions were keyed with.
        assert_eq!(mix_seed(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mix_seed(7, 1), diffad_nn::seed::mix_seed(7, 1));
    }

    #[test]
    fn noise_is_roughly_standard_normal() {
        let mut rng = sample_rng(3, 0, 0);
        let v = standard_normal(&mut rng, 20_000);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
