//! AdamW with inspectable state, and global-norm gradient clipping.
//!
//! candle-nn's `AdamW` keeps its first and second moments private, so they cannot be
//! checkpointed; resuming with it would restart the moments from zero. This is a small
//! re-implementation of PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias
//! correction) whose moments are saved and restored by the trainer:
//!
//! ```text
//! θ ← θ (1 − lr·λ)
//! m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
//! θ ← θ − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! The update is computed in `f32` whatever the parameter dtype. Parameters whose gradient
//! is absent are left unchanged (as PyTorch does for `grad = None`); the step count `t` is
//! shared by all parameters.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hyper-parameters of [`AdamW`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate (the trainer's warm-up scales it).
    pub lr: f64,
    /// `β₁`.
    pub beta1: f64,
    /// `β₂`.
    pub beta2: f64,
    /// `ε`.
    pub eps: f64,
    /// Decoupled weight decay `λ`.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// LDM's autoencoder optimiser: `Adam(lr = 4.5e-6 · 16 · 1, betas = (0.5, 0.9))` with no
    /// weight decay; the paper's effective rate is 7.2e-5 (REFERENCE §2).
    fn default() -> Self {
        Self {
            lr: 7.2e-5,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// PyTorch-style AdamW over named variables (see the module doc).
#[derive(Debug)]
pub struct AdamW {
    params: Vec<(String, Var)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: u64,
    config: AdamWConfig,
}

impl AdamW {
    /// An optimiser over `params` with zero moments.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        if !(0.0..1.0).contains(&config.beta1) || !(0.0..1.0).contains(&config.beta2) {
            return Err(Error::Config(format!(
                "AdamW betas ({}, {}) must lie in [0, 1)",
                config.beta1, config.beta2
            )));
        }
        if config.lr < 0.0 || config.eps <= 0.0 || config.weight_decay < 0.0 {
            return Err(Error::Config(
                "AdamW needs lr >= 0, eps > 0 and weight_decay >= 0".into(),
            ));
        }
        let zeros = |v: &Var| Tensor::zeros(v.shape(), DType::F32, v.device());
        let exp_avg = params
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        let exp_avg_sq = params
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            params,
            exp_avg,
            exp_avg_sq,
            step: 0,
            config,
        })
    }

    /// The optimised variables, in order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Steps taken so far (`t`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The gradients of the optimised variables in `grads`, in order.
    pub fn gradients(&self, grads: &candle_core::backprop::GradStore) -> Vec<Option<Tensor>> {
        self.params
            .iter()
            .map(|(_, v)| grads.get(v.as_tensor()).cloned())
            .collect()
    }

    /// One update with the given gradients (aligned with [`params`](Self::params)) and
    /// learning rate `lr` (overriding the config's, e.g. during warm-up).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(Error::Config(format!(
                "AdamW::step got {} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for (i, grad) in grads.iter().enumerate() {
            let Some(g) = grad else { continue };
            let (_, var) = &self.params[i];
            let g = g.to_dtype(DType::F32)?;
            let m = ((&self.exp_avg[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.exp_avg_sq[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let theta = var.as_tensor().to_dtype(DType::F32)?;
            let theta = if c.weight_decay > 0.0 {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta
            };
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let update = ((&m / denom)? * (lr / bias1))?;
            var.set(&(theta - update)?.to_dtype(var.dtype())?)?;
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`, PyTorch's
    /// names), for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("exp_avg.{name}"), self.exp_avg[i].clone());
            out.insert(format!("exp_avg_sq.{name}"), self.exp_avg_sq[i].clone());
        }
        out
    }

    /// Restores the moments (from [`state_tensors`](Self::state_tensors)) and the step
    /// count. Every moment must be present with its parameter's shape.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, step: u64) -> Result<()> {
        let mut exp_avg = Vec::with_capacity(self.params.len());
        let mut exp_avg_sq = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            for (prefix, out) in [("exp_avg", &mut exp_avg), ("exp_avg_sq", &mut exp_avg_sq)] {
                let key = format!("{prefix}.{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| Error::Config(format!("optimiser state lacks {key}")))?;
                if t.dims() != var.dims() {
                    return Err(Error::shape(
                        "AdamW::load_state",
                        format!("{key} of shape {:?}", var.dims()),
                        t.dims(),
                    ));
                }
                out.push(t.to_dtype(DType::F32)?.to_device(var.device())?);
            }
        }
        self.exp_avg = exp_avg;
        self.exp_avg_sq = exp_avg_sq;
        self.step = step;
        Ok(())
    }
}

/// Global L2 norm of the gradients, `√(Σ ‖g‖²)` over all present gradients.
pub fn grad_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.iter().flatten() {
        total += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Scales all gradients by `min(1, max_norm / (‖g‖ + 1e-6))` (PyTorch's
/// `clip_grad_norm_`) and returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_torch_adamw() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/adamw_io.safetensors");
        let t = crate::checkpoint::read_safetensors(&path, &Device::Cpu).unwrap();
        let var = Var::from_tensor(&t["p0"]).unwrap();
        let config = AdamWConfig {
            lr: 0.1,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(vec![("p".into(), var.clone())], config).unwrap();
        for g in ["g1", "g2", "g3"] {
            opt.step(&[Some(t[g].clone())], 0.1).unwrap();
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        let want = t["p3"].to_vec1::<f32>().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let a = Tensor::new(&[3f32, 0.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[4f32], &Device::Cpu).unwrap();
        let mut grads = vec![Some(a), None, Some(b)];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((grad_norm(&grads).unwrap() - 1.0).abs() < 1e-5);
    }
}
