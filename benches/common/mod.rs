//! Inputs shared by the benches (`mod common;` in each).

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeded uniform `[0, 1)` values on the CPU (`p_one`: Bernoulli 0/1 values instead, e.g.
/// masks with that share of anomalous pixels).
pub fn uniform(shape: &[usize], seed: u64, p_one: Option<f64>) -> Tensor {
    let n: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n)
        .map(|_| match p_one {
            Some(p) => f32::from(u8::from(rng.random_bool(p))),
            None => rng.random::<f32>(),
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("bench tensor")
}
