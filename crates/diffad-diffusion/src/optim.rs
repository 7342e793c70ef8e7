//! Training utilities with state that can be saved: AdamW whose moments are visible
//! (candle-nn's `AdamW` hides them, so it cannot be checkpointed and resumed exactly),
//! an exponential moving average of the weights, and global-norm gradient clipping.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hyper-parameters of [`AdamW`] (PyTorch's `torch.optim.AdamW` defaults except the
/// learning rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Learning rate `lr`.
    pub lr: f64,
    /// `beta1`.
    pub beta1: f64,
    /// `beta2`.
    pub beta2: f64,
    /// `eps` added to `sqrt(v_hat)`.
    pub eps: f64,
    /// Decoupled weight decay `lambda` (PyTorch default 0.01, which CompVis' LDM keeps).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW (Loshchilov & Hutter) exactly as `torch.optim.AdamW` (non-amsgrad):
///
/// ```text
/// theta <- theta - lr * lambda * theta
/// m <- beta1 m + (1 - beta1) g ;  v <- beta2 v + (1 - beta2) g^2
/// theta <- theta - lr * (m / (1 - beta1^k)) / (sqrt(v / (1 - beta2^k)) + eps)
/// ```
///
/// The moments live in the parameter's dtype; parameters without a gradient are skipped.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
}

impl AdamW {
    /// An optimiser over named variables (e.g. the sorted contents of a `VarMap`).
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        if !(config.lr >= 0.0
            && (0.0..1.0).contains(&config.beta1)
            && (0.0..1.0).contains(&config.beta2))
        {
            return Err(Error::config("AdamW", format!("{config:?}")));
        }
        let m = params
            .iter()
            .map(|(_, p)| p.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            config,
            params,
            m,
            v,
            step: 0,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Number of updates taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The optimised variables.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Applies one update with the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let k = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(k);
        let bias2 = 1.0 - c.beta2.powi(k);
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let theta = var.as_tensor();
            let m = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&m / bias1)?;
            let v_hat = (&v / bias2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let decayed = (theta * (1.0 - c.lr * c.weight_decay))?;
            var.set(&(decayed - (update * c.lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The state to checkpoint: `adam.m.<name>` and `adam.v.<name>` tensors.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(self.m.iter().zip(&self.v))
            .flat_map(|((name, _), (m, v))| {
                [
                    (format!("adam.m.{name}"), m.clone()),
                    (format!("adam.v.{name}"), v.clone()),
                ]
            })
            .collect()
    }

    /// Restores the moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, (name, var)) in self.params.iter().enumerate() {
            for (slot, prefix) in [(&mut self.m[i], "adam.m."), (&mut self.v[i], "adam.v.")] {
                let key = format!("{prefix}{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| Error::Input(format!("optimizer state lacks `{key}`")))?;
                if t.dims() != var.dims() {
                    return Err(Error::shape(
                        "AdamW state",
                        format!("{key} of shape {:?}", var.dims()),
                        t.dims(),
                    ));
                }
                *slot = t.to_dtype(var.dtype())?.to_device(var.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`: factor `min(1, max_norm / (norm + 1e-6))`).
/// Returns the norm before clipping.
pub fn clip_grad_norm(
    params: &[(String, Var)],
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<f64> {
    let mut total = 0.0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        for (_, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = (g * factor)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// Exponential moving average of the weights (CompVis `LitEma`):
/// `shadow <- d shadow + (1 - d) theta` with `d = decay`, or with warm-up
/// `d = min(decay, (1 + n) / (10 + n))` after `n` updates.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    warmup: bool,
    updates: u64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts the average at the current values of `params`.
    pub fn new(params: &[(String, Var)], decay: f64, warmup: bool) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::config(
                "EMA",
                format!("decay {decay} is not in [0, 1]"),
            ));
        }
        let shadow = params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            decay,
            warmup,
            updates: 0,
            shadow,
        })
    }

    /// The decay used by the next update.
    pub fn current_decay(&self) -> f64 {
        if self.warmup {
            let n = self.updates as f64;
            self.decay.min((1.0 + n) / (10.0 + n))
        } else {
            self.decay
        }
    }

    /// Moves the average towards `params` (same order as at construction).
    pub fn update(&mut self, params: &[(String, Var)]) -> Result<()> {
        let d = self.current_decay();
        for ((_, shadow), (_, var)) in self.shadow.iter_mut().zip(params) {
            *shadow = (shadow.affine(d, 0.0)? + var.as_tensor().detach().affine(1.0 - d, 0.0)?)?;
        }
        self.updates += 1;
        Ok(())
    }

    /// Number of updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The averaged weights by parameter name.
    pub fn weights(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// Replaces the averaged weights (checkpoint resume).
    pub fn load(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        updates: u64,
    ) -> Result<()> {
        for (name, shadow) in self.shadow.iter_mut() {
            let key = format!("{prefix}{name}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| Error::Input(format!("EMA state lacks `{key}`")))?;
            if t.dims() != shadow.dims() {
                return Err(Error::shape(
                    "EMA state",
                    format!("{key} of shape {:?}", shadow.dims()),
                    t.dims(),
                ));
            }
            *shadow = t.to_dtype(shadow.dtype())?.to_device(shadow.device())?;
        }
        self.updates = updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One AdamW step against values computed by hand from torch.optim.AdamW's formula.
    #[test]
    fn adamw_matches_torch_formula() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f64, -2.0], &dev).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], cfg).unwrap();
        // loss = sum(w^2) -> g = 2w
        for _ in 0..2 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
        }
        // reference by hand in f64
        let mut theta = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for k in 1..=2 {
            for i in 0..2 {
                let g = 2.0 * theta[i];
                theta[i] *= 1.0 - 0.1 * 0.5;
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mh = m[i] / (1.0 - 0.9f64.powi(k));
                let vh = v[i] / (1.0 - 0.999f64.powi(k));
                theta[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got: Vec<f64> = w.as_tensor().to_vec1().unwrap();
        for i in 0..2 {
            assert!((got[i] - theta[i]).abs() < 1e-12, "{got:?} vs {theta:?}");
        }
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let dev = Device::Cpu;
        let a = Var::new(&[3.0f64], &dev).unwrap();
        let b = Var::new(&[4.0f64], &dev).unwrap();
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        // grads = (3, 4) -> norm 5
        let loss = ((a.as_tensor().sqr().unwrap() * 0.5).unwrap()
            + (b.as_tensor().sqr().unwrap() * 0.5).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
        let mut grads = loss.backward().unwrap();
        let norm = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12);
        let ga: Vec<f64> = grads.get(a.as_tensor()).unwrap().to_vec1().unwrap();
        let gb: Vec<f64> = grads.get(b.as_tensor()).unwrap().to_vec1().unwrap();
        assert!(((ga[0] * ga[0] + gb[0] * gb[0]).sqrt() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ema_follows_the_warmup_decay() {
        let dev = Device::Cpu;
        let w = Var::new(&[0.0f64], &dev).unwrap();
        let params = vec![("w".to_string(), w.clone())];
        let mut ema = Ema::new(&params, 0.9999, true).unwrap();
        w.set(&Tensor::new(&[10.0f64], &dev).unwrap()).unwrap();
        ema.update(&params).unwrap(); // d = min(0.9999, 1/10) = 0.1
        let s: Vec<f64> = ema.weights()[0].1.to_vec1().unwrap();
        assert!((s[0] - 9.0).abs() < 1e-12);
        assert!((ema.current_decay() - 2.0 / 11.0).abs() < 1e-15);
    }
}
