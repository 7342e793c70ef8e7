//! Dropout whose masks are reproducible.
//!
//! `y = x * m / (1 - p)` with `m ~ Bernoulli(1 - p)` per element in training, `y = x` in
//! evaluation. On the CPU the mask is drawn from a ChaCha8 stream owned by the layer
//! (seeded at construction, advancing with every call), so a training run is the same for
//! any thread count. On other devices the mask comes from the device RNG (seed it with
//! `Device::set_seed`), because shipping a mask per call to the accelerator would cost more
//! than the layer.

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// A dropout layer with a seeded mask stream (see the module doc).
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl Dropout {
    /// A dropout layer dropping each element with probability `p` in `[0, 1)`, its CPU masks
    /// drawn from `seed`.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::config(
                "Dropout",
                format!("probability {p} not in [0, 1)"),
            ));
        }
        Ok(Self {
            p,
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Applies dropout when `train` (identity otherwise, and when `p == 0`).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        match x.device() {
            Device::Cpu => {
                let n = x.elem_count();
                let mut rng = self
                    .rng
                    .lock()
                    .map_err(|_| Error::config("Dropout", "mask generator lock poisoned"))?;
                let mask: Vec<f32> = (0..n)
                    .map(|_| {
                        if rng.random::<f64>() < keep {
                            (1.0 / keep) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                drop(rng);
                let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?.to_dtype(x.dtype())?;
                Ok((x * mask)?)
            }
            _ => Ok(candle_nn::ops::dropout(x, self.p as f32)?),
        }
    }
}
