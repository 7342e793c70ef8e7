//! Optimisers and training helpers whose state can be checkpointed.
//!
//! candle-nn's `AdamW` keeps its moments private, so a run resumed from a checkpoint
//! would restart them from zero, and it updates in the parameter's dtype. Every DiffAD
//! trainer (VAE, LDM, segmenter) uses this module instead:
//!
//! * [`AdamW`]: PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias correction,
//!   non-amsgrad); with `weight_decay = 0` it is exactly `torch.optim.Adam`
//!   ([`AdamWConfig::adam`]), which DRAEM/DiffAD use for the segmenter:
//!
//!   ```text
//!   θ ← θ (1 − lr·λ)
//!   m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
//!   θ ← θ − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
//!   ```
//!
//!   Moments are kept in `f32` (in `f64` for `f64` parameters), whatever the parameter
//!   dtype, and are saved under PyTorch's names `exp_avg.<param>`, `exp_avg_sq.<param>`.
//! * [`clip_grad_norm`]: `torch.nn.utils.clip_grad_norm_` on a `GradStore`.
//! * [`Ema`]: CompVis' `LitEma` exponential moving average of the weights.
//! * [`MultiStepLr`] and [`linear_warmup`]: learning-rate schedules.
//!
//! ```
//! use candle_core::{Device, Var};
//! use diffad_nn::optim::{AdamW, AdamWConfig};
//!
//! let w = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
//! let mut opt = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::adam(0.1))?;
//! let loss = w.as_tensor().sqr()?.sum_all()?;
//! opt.step(&loss.backward()?)?;
//! // Adam's first step moves every coordinate by lr against the sign of its gradient.
//! assert_eq!(w.as_tensor().to_vec1::<f32>()?, vec![0.9, -1.9]);
//! # Ok::<(), diffad_nn::Error>(())
//! ```

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};

/// Hyper-parameters of [`AdamW`]; `Default` is `torch.optim.AdamW`'s.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Learning rate `lr` (a schedule may override it per step with [`AdamW::set_lr`]).
    pub lr: f64,
    /// `β₁`.
    pub beta1: f64,
    /// `β₂`.
    pub beta2: f64,
    /// `ε`, added to the bias-corrected `√v`.
    pub eps: f64,
    /// Decoupled weight decay `λ`.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// `torch.optim.Adam(lr)` with its defaults (no weight decay).
    pub fn adam(lr: f64) -> Self {
        Self {
            lr,
            weight_decay: 0.0,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = self.lr >= 0.0
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.weight_decay >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::config(
                "AdamW",
                format!("{self:?}: needs lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0"),
            ))
        }
    }
}

fn moment_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// AdamW over named variables (see the module doc).
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<(String, Var)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: u64,
}

impl AdamW {
    /// An optimiser over `params` (e.g. a `VarMap`'s contents sorted by name) with zero
    /// moments.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        // Separate tensors for every moment: the CPU kernels update them in place.
        let zeros = |v: &Var| Tensor::zeros(v.shape(), moment_dtype(v.dtype()), v.device());
        let moments = || {
            params
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<candle_core::Result<Vec<_>>>()
        };
        let exp_avg = moments()?;
        let exp_avg_sq = moments()?;
        Ok(Self {
            config,
            params,
            exp_avg,
            exp_avg_sq,
            step: 0,
        })
    }

    /// The hyper-parameters (with the current learning rate).
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Changes the learning rate (for schedules and warm-up).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Number of updates taken (`t`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The optimised variables, in order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Applies one update with the gradients in `grads`; parameters without a gradient
    /// are left unchanged, moments included (PyTorch's `grad = None`).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            if self.step_in_place(i, var, g, bias1, bias2_sqrt)? {
                continue;
            }
            let dt = moment_dtype(var.dtype());
            let g = g.to_dtype(dt)?;
            let m = ((&self.exp_avg[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.exp_avg_sq[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let mut theta = var.as_tensor().to_dtype(dt)?;
            if c.weight_decay > 0.0 {
                theta = (theta * (1.0 - c.lr * c.weight_decay))?;
            }
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let update = ((&m / denom)? * (c.lr / bias1))?;
            var.set(&(theta - update)?.to_dtype(var.dtype())?)?;
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
        }
        Ok(())
    }

    /// [`AdamW::step`] for parameter `i` with the in-place CPU kernels
    /// (`kernels::adam`, bit-identical to the tensor expressions), when they
    /// apply: a CPU `f32`/`f64` parameter whose gradient and moments have its dtype.
    /// Returns whether it ran.
    fn step_in_place(
        &self,
        i: usize,
        var: &Var,
        g: &Tensor,
        bias1: f64,
        bias2_sqrt: f64,
    ) -> Result<bool> {
        let (m, v) = (&self.exp_avg[i], &self.exp_avg_sq[i]);
        let dtype = var.dtype();
        let applies = crate::runtime::cpu_kernels(var.device())
            && matches!(dtype, DType::F32 | DType::F64)
            && g.dtype() == dtype
            && m.dtype() == dtype
            && v.dtype() == dtype
            && g.dims() == var.dims()
            && var.as_tensor().is_contiguous()
            && m.is_contiguous()
            && v.is_contiguous();
        if !applies {
            return Ok(false);
        }
        use crate::kernels::adam::{Moment, Update};
        let c = self.config;
        let g = g.contiguous()?;
        m.inplace_op2(
            &g,
            &Moment {
                beta: c.beta1,
                square: false,
            },
        )?;
        v.inplace_op2(
            &g,
            &Moment {
                beta: c.beta2,
                square: true,
            },
        )?;
        var.as_tensor().inplace_op3(
            m,
            v,
            &Update {
                decay: (c.weight_decay > 0.0).then_some(1.0 - c.lr * c.weight_decay),
                inv_bias2: 1.0 / bias2_sqrt,
                eps: c.eps,
                step: c.lr / bias1,
            },
        )?;
        Ok(true)
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`), for a
    /// checkpoint; the step count is saved by the caller. They are copies: the optimiser
    /// updates its own in place.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(self.exp_avg.iter().zip(&self.exp_avg_sq))
            .flat_map(|((name, _), (m, v))| {
                // (A copy cannot fail on the CPU; elsewhere the live tensor is the fallback.)
                let copy = |t: &Tensor| t.copy().unwrap_or_else(|_| t.clone());
                [
                    (format!("exp_avg.{name}"), copy(m)),
                    (format!("exp_avg_sq.{name}"), copy(v)),
                ]
            })
            .collect()
    }

    /// Restores the moments saved by [`AdamW::state_tensors`] (looked up by name
    /// through `get`) and the step count. Every moment must be present with its
    /// parameter's shape; nothing changes on error.
    pub fn load_state(&mut self, get: impl Fn(&str) -> Option<Tensor>, step: u64) -> Result<()> {
        let mut exp_avg = Vec::with_capacity(self.params.len());
        let mut exp_avg_sq = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            for (prefix, out) in [("exp_avg", &mut exp_avg), ("exp_avg_sq", &mut exp_avg_sq)] {
                let key = format!("{prefix}.{name}");
                let t = get(&key).ok_or_else(|| {
                    Error::config(
                        "AdamW::load_state",
                        format!("optimiser state lacks `{key}`"),
                    )
                })?;
                if t.dims() != var.dims() {
                    return Err(Error::shape(
                        "AdamW::load_state",
                        format!("`{key}` of shape {:?}", var.dims()),
                        t.dims(),
                    ));
                }
                // A copy: the moments are updated in place, and must not change the
                // caller's tensors.
                out.push(
                    t.to_dtype(moment_dtype(var.dtype()))?
                        .to_device(var.device())?
                        .copy()?,
                );
            }
        }
        self.exp_avg = exp_avg;
        self.exp_avg_sq = exp_avg_sq;
        self.step = step;
        Ok(())
    }
}

/// Global L2 norm `√(Σ ‖g‖²)` of the gradients of `params` present in `grads`.
pub fn grad_norm(params: &[(String, Var)], grads: &GradStore) -> Result<f64> {
    let mut total = 0.0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            // CPU tensors: summed in place, without three temporary tensors.
            if crate::runtime::cpu_kernels(g.device()) {
                if let Some(s) = crate::kernels::adam::sum_squares(g) {
                    total += s;
                    continue;
                }
            }
            total += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    Ok(total.sqrt())
}

/// Scales the gradients of `params` so that their global L2 norm is at most
/// `max_norm` (`torch.nn.utils.clip_grad_norm_`: factor `min(1, max_norm / (norm +
/// 1e-6))`). Returns the norm before clipping; a non-finite norm is an error (the
/// step would destroy the weights).
pub fn clip_grad_norm(
    params: &[(String, Var)],
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<f64> {
    let norm = grad_norm(params, grads)?;
    if !norm.is_finite() {
        return Err(Error::config(
            "clip_grad_norm",
            format!("gradient norm is {norm} (the loss diverged)"),
        ));
    }
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
/// `shadow ← d·shadow + (1 − d)·θ` with `d = decay`, or with warm-up
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
                "Ema",
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

    /// The decay the next update uses.
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
        if params.len() != self.shadow.len() {
            return Err(Error::config(
                "Ema::update",
                format!(
                    "{} parameters for an average of {}",
                    params.len(),
                    self.shadow.len()
                ),
            ));
        }
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

    /// Copies the averaged weights into `params` (e.g. for evaluation or export).
    pub fn copy_to(&self, params: &[(String, Var)]) -> Result<()> {
        for ((_, shadow), (_, var)) in self.shadow.iter().zip(params) {
            var.set(&shadow.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Replaces the averaged weights (checkpoint resume); `get` looks up
    /// `<prefix><param>`. Nothing changes on error.
    pub fn load(
        &mut self,
        get: impl Fn(&str) -> Option<Tensor>,
        prefix: &str,
        updates: u64,
    ) -> Result<()> {
        let mut loaded = Vec::with_capacity(self.shadow.len());
        for (name, shadow) in &self.shadow {
            let key = format!("{prefix}{name}");
            let t = get(&key)
                .ok_or_else(|| Error::config("Ema::load", format!("EMA state lacks `{key}`")))?;
            if t.dims() != shadow.dims() {
                return Err(Error::shape(
                    "Ema::load",
                    format!("`{key}` of shape {:?}", shadow.dims()),
                    t.dims(),
                ));
            }
            loaded.push(t.to_dtype(shadow.dtype())?.to_device(shadow.device())?);
        }
        for ((_, shadow), t) in self.shadow.iter_mut().zip(loaded) {
            *shadow = t;
        }
        self.updates = updates;
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.MultiStepLR`: `base_lr · γ^(number of milestones ≤ epoch)`.
/// DRAEM/DiffAD's segmenter uses milestones at 80 % and 90 % of the epochs, γ = 0.2.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLr {
    /// The initial learning rate.
    pub base_lr: f64,
    /// Epochs at which the rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// The factor.
    pub gamma: f64,
}

impl MultiStepLr {
    /// Milestones at `fractions` of `epochs`: epoch `ceil(f · epochs)`.
    ///
    /// DRAEM passes the float milestones `epochs · 0.8` and `epochs · 0.9`; PyTorch
    /// compares them with the integer epoch counter, so they only fire when the product
    /// is a whole number (560 and 630 for 700 epochs, which `ceil` reproduces). For
    /// other epoch counts DRAEM never decays; we decay at the first epoch past the
    /// fraction instead.
    pub fn from_fractions(base_lr: f64, epochs: usize, fractions: &[f64], gamma: f64) -> Self {
        let milestones = fractions
            .iter()
            .map(|f| (f * epochs as f64 - 1e-9).ceil().max(0.0) as usize)
            .collect();
        Self {
            base_lr,
            milestones,
            gamma,
        }
    }

    /// DRAEM/DiffAD's schedule: milestones at 80 % and 90 % of `epochs`, `γ = 0.2`.
    pub fn draem(base_lr: f64, epochs: usize) -> Self {
        Self::from_fractions(base_lr, epochs, &[0.8, 0.9], 0.2)
    }

    /// The learning rate during `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| m <= epoch).count();
        self.base_lr * self.gamma.powi(passed as i32)
    }
}

/// Linear warm-up: `base_lr · min(1, (step + 1) / warmup_steps)` (constant when
/// `warmup_steps` is 0).
pub fn linear_warmup(base_lr: f64, step: u64, warmup_steps: u64) -> f64 {
    if warmup_steps == 0 {
        base_lr
    } else {
        base_lr * ((step + 1) as f64 / warmup_steps as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The in-place CPU kernels and the tensor expressions (the device-generic path) give
    /// bit-identical parameters, moments and gradient norms over several steps, with and
    /// without weight decay, in `f32` and `f64`.
    #[test]
    fn in_place_kernels_match_the_tensor_path() {
        let dev = Device::Cpu;
        for (dtype, weight_decay) in [(DType::F32, 0.01), (DType::F32, 0.0), (DType::F64, 0.3)] {
            let run = |generic: bool| {
                let _guard = crate::runtime::force_generic_ops(generic);
                let values: Vec<f64> = (0..37)
                    .map(|i| ((i * 17 % 11) as f64 - 5.0) * 0.3)
                    .collect();
                let w = Var::from_tensor(
                    &Tensor::from_vec(values, (37,), &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap();
                let cfg = AdamWConfig {
                    lr: 0.05,
                    weight_decay,
                    ..AdamWConfig::default()
                };
                let params = vec![("w".to_string(), w.clone())];
                let mut opt = AdamW::new(params.clone(), cfg).unwrap();
                let mut norms = Vec::new();
                for _ in 0..4 {
                    let loss = (w.as_tensor().sqr().unwrap() * w.as_tensor().sin().unwrap())
                        .unwrap()
                        .sum_all()
                        .unwrap();
                    let grads = loss.backward().unwrap();
                    norms.push(grad_norm(&params, &grads).unwrap());
                    opt.step(&grads).unwrap();
                }
                let flat = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
                let state: Vec<Vec<f64>> =
                    opt.state_tensors().iter().map(|(_, t)| flat(t)).collect();
                (flat(w.as_tensor()), state, norms)
            };
            let (fast, generic) = (run(false), run(true));
            assert_eq!(fast.0, generic.0, "{dtype:?} parameters");
            assert_eq!(fast.1, generic.1, "{dtype:?} moments");
            for (a, b) in fast.2.iter().zip(&generic.2) {
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs(),
                    "{dtype:?} gradient norm {a} vs {b}"
                );
            }
        }
    }

    /// Two steps against torch.optim.AdamW's formula evaluated by hand in f64.
    #[test]
    fn adamw_matches_the_torch_formula() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f64, -2.0], &dev).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], cfg).unwrap();
        for _ in 0..2 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
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
    fn resume_continues_exactly() {
        let dev = Device::Cpu;
        let run = |split: bool| {
            let w = Var::new(&[0.3f32, -0.7, 1.1], &dev).unwrap();
            let params = vec![("w".to_string(), w.clone())];
            let mut opt = AdamW::new(params.clone(), AdamWConfig::default()).unwrap();
            for i in 0..4 {
                if split && i == 2 {
                    let state = opt.state_tensors();
                    let step = opt.step_count();
                    opt = AdamW::new(params.clone(), AdamWConfig::default()).unwrap();
                    let find = |k: &str| state.iter().find(|(n, _)| n == k).map(|(_, t)| t.clone());
                    opt.load_state(find, step).unwrap();
                }
                let loss = w.as_tensor().powf(3.0).unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
            w.as_tensor().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn missing_or_misshapen_state_is_an_error() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, 2.0], &dev).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), w)], AdamWConfig::default()).unwrap();
        assert!(opt.load_state(|_| None, 3).is_err());
        let bad = Tensor::zeros(5, DType::F32, &dev).unwrap();
        assert!(matches!(
            opt.load_state(|_| Some(bad.clone()), 3),
            Err(Error::Shape { .. })
        ));
        assert!(AdamW::new(
            vec![],
            AdamWConfig {
                beta1: 1.0,
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let dev = Device::Cpu;
        let a = Var::new(&[3.0f64], &dev).unwrap();
        let b = Var::new(&[4.0f64], &dev).unwrap();
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let loss = ((a.as_tensor().sqr().unwrap() * 0.5).unwrap()
            + (b.as_tensor().sqr().unwrap() * 0.5).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
        let mut grads = loss.backward().unwrap();
        let norm = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12);
        assert!((grad_norm(&params, &grads).unwrap() - 1.0).abs() < 1e-6);
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

    #[test]
    fn schedules() {
        let s = MultiStepLr::draem(1e-3, 10);
        assert_eq!(s.milestones, vec![8, 9]);
        assert_eq!(MultiStepLr::draem(1e-3, 700).milestones, vec![560, 630]);
        assert_eq!(MultiStepLr::draem(1e-3, 15).milestones, vec![12, 14]);
        assert!((s.lr_at(7) - 1e-3).abs() < 1e-15);
        assert!((s.lr_at(8) - 2e-4).abs() < 1e-15);
        assert!((s.lr_at(9) - 4e-5).abs() < 1e-15);
        assert!((linear_warmup(1.0, 0, 4) - 0.25).abs() < 1e-15);
        assert!((linear_warmup(1.0, 10, 4) - 1.0).abs() < 1e-15);
        assert!((linear_warmup(0.5, 0, 0) - 0.5).abs() < 1e-15);
    }
}
