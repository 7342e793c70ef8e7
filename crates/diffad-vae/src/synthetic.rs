//! Small procedural images for examples, tests and smoke runs: smooth colour gradients,
//! sinusoidal stripes at random angles and soft discs, each image seeded by
//! `(seed, index)` so a set does not depend on how it is generated.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// `n` images `(n, 3, size, size)` with values in `[0, 1]`: image `i` is a gradient, a
/// stripe pattern or a disc (`i mod 3`) with colours and geometry drawn from
/// `ChaCha8Rng(seed)` on stream `i`.
pub fn synthetic_images(n: usize, size: usize, seed: u64, device: &Device) -> Result<Tensor> {
    if n == 0 || size == 0 {
        return Err(Error::Config(format!(
            "cannot make {n} synthetic images of size {size}"
        )));
    }
    let mut data = Vec::with_capacity(n * 3 * size * size);
    for i in 0..n {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64);
        let a: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        let b: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        let angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
        let freq: f32 = rng.random_range(1.0..4.0);
        let (cx, cy, r): (f32, f32, f32) = (
            rng.random_range(0.3..0.7),
            rng.random_range(0.3..0.7),
            rng.random_range(0.15..0.35),
        );
        let (s, c) = angle.sin_cos();
        for ch in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    let u = (x as f32 + 0.5) / size as f32;
                    let v = (y as f32 + 0.5) / size as f32;
                    let t = match i % 3 {
                        0 => (u * c + v * s).clamp(0.0, 1.0),
                        1 => 0.5 + 0.5 * ((u * c + v * s) * freq * std::f32::consts::TAU).sin(),
                        _ => {
                            let d = ((u - cx).powi(2) + (v - cy).powi(2)).sqrt();
                            1.0 / (1.0 + ((d - r) * 30.0).exp())
                        }
                    };
                    data.push(a[ch] * (1.0 - t) + b[ch] * t);
                }
            }
        }
    }
    Ok(Tensor::from_vec(data, (n, 3, size, size), device)?)
}
