//! Reproducible Gaussian noise with one random stream per sample.
//!
//! Every sample `i` of a batch draws from its own `ChaCha8Rng` seeded from
//! `(seed, purpose)` with stream `i`, on the CPU, and the result is moved to the
//! target device. A sample's noise therefore depends only on `(seed, purpose, i)`:
//! not on the batch it is in, the thread count, or the device (Candle's device RNG
//! is never used).

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;

/// SplitMix64 finaliser: decorrelates nearby seeds before they seed ChaCha.
pub fn mix_seed(seed: u64, salt: u64) -> u64 {
    let mut z = seed
        .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

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
    fn noise_is_roughly_standard_normal() {
        let mut rng = sample_rng(3, 0, 0);
        let v = standard_normal(&mut rng, 20_000);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
