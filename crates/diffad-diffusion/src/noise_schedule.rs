//! Noise schedules: the variances `beta_1..beta_T` of the forward process and
//! their cumulative products `abar_t = prod_{s<=t} (1 - beta_s)` (paper Sec. 3.2/3.3).
//!
//! The forward process `q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I)` gives
//! [`NoiseSchedule::add_noise`]: `z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps`, the same
//! formula the noisy condition embedding applies to `c = E(x_a)` (Sec. 3.3).
//!
//! Everything is kept in `f64` (diffusers keeps `float32`, which alone is off by
//! ~3e-7 at T = 1000); tensors are touched only by scalar multiplies in their own dtype.
//! Timestep indices are 0-based as in diffusers: `abar[0] = 1 - beta_1`.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the betas are laid out over `T` timesteps (diffusers' `beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `beta_t = linspace(beta_start, beta_end, T)` (DDPM, Ho et al.; diffusers `"linear"`).
    Linear {
        /// `beta_1`.
        beta_start: f64,
        /// `beta_T`.
        beta_end: f64,
    },
    /// `beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)^2`: CompVis latent
    /// diffusion's `"linear"` schedule, diffusers' `"scaled_linear"`. DiffAD uses
    /// `0.0015..0.02` (`docs/reference.md` §3).
    ScaledLinear {
        /// `beta_1`.
        beta_start: f64,
        /// `beta_T`.
        beta_end: f64,
    },
    /// Cosine schedule of Nichol & Dhariwal (diffusers `"squaredcos_cap_v2"`):
    /// `abar(s) = cos^2((s + 0.008) / 1.008 * pi / 2)`,
    /// `beta_t = min(1 - abar(t/T) / abar((t-1)/T), 0.999)`.
    SquaredCosCapV2,
}

impl BetaSchedule {
    /// The DiffAD / CompVis LDM schedule: scaled-linear from 0.0015 to 0.02.
    pub fn diffad() -> Self {
        Self::ScaledLinear {
            beta_start: 0.0015,
            beta_end: 0.02,
        }
    }

    /// diffusers' default: linear from 1e-4 to 0.02.
    pub fn ddpm_linear() -> Self {
        Self::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }

    /// The betas of this schedule over `num_train_timesteps` steps.
    pub fn betas(&self, num_train_timesteps: usize) -> Result<Vec<f64>> {
        if num_train_timesteps == 0 {
            return Err(Error::config(
                "noise schedule",
                "num_train_timesteps must be > 0",
            ));
        }
        let betas = match *self {
            Self::Linear {
                beta_start,
                beta_end,
            } => torch_linspace(beta_start, beta_end, num_train_timesteps),
            Self::ScaledLinear {
                beta_start,
                beta_end,
            } => {
                if beta_start < 0.0 || beta_end < 0.0 {
                    return Err(Error::config(
                        "noise schedule",
                        format!(
                            "scaled_linear needs non-negative betas, got {beta_start}..{beta_end}"
                        ),
                    ));
                }
                torch_linspace(beta_start.sqrt(), beta_end.sqrt(), num_train_timesteps)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            Self::SquaredCosCapV2 => {
                let abar = |s: f64| {
                    ((s + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                let n = num_train_timesteps as f64;
                (0..num_train_timesteps)
                    .map(|i| {
                        let t1 = i as f64 / n;
                        let t2 = (i + 1) as f64 / n;
                        (1.0 - abar(t2) / abar(t1)).min(0.999)
                    })
                    .collect()
            }
        };
        Ok(betas)
    }
}

/// `torch.linspace(start, end, n)` in f64: the first half counts up from
/// `start`, the second half down from `end`, exactly as PyTorch does.
fn torch_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (n - 1 - i) as f64
            }
        })
        .collect()
}

/// The betas and cumulative alphas of a diffusion process, in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// Builds the schedule `kind` over `num_train_timesteps` steps (diffusers'
    /// `betas`, `alphas = 1 - betas`, `alphas_cumprod = cumprod(alphas)`).
    pub fn new(kind: BetaSchedule, num_train_timesteps: usize) -> Result<Self> {
        Self::from_betas(kind.betas(num_train_timesteps)?)
    }

    /// The DiffAD schedule: T = 1000, scaled-linear 0.0015..0.02 (`docs/reference.md` §3).
    pub fn diffad() -> Self {
        let betas = torch_linspace(0.0015f64.sqrt(), 0.02f64.sqrt(), 1000)
            .into_iter()
            .map(|b| b * b)
            .collect();
        Self::from_valid_betas(betas)
    }

    /// Builds a schedule from explicit betas (diffusers' `trained_betas`); every beta must
    /// lie in `[0, 1)`.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        if betas.is_empty() {
            return Err(Error::config("noise schedule", "no betas"));
        }
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(b.is_finite() && (0.0..1.0).contains(*b)))
        {
            return Err(Error::config(
                "noise schedule",
                format!("beta[{i}] = {b} is not in [0, 1)"),
            ));
        }
        Ok(Self::from_valid_betas(betas))
    }

    fn from_valid_betas(betas: Vec<f64>) -> Self {
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// `T`, the number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// `beta_{t+1}` for 0-based `t`.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `abar_{t+1} = prod_{s<=t} (1 - beta_s)` for 0-based `t`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `abar_t`, checking the range.
    pub fn alpha_cumprod(&self, t: usize) -> Result<f64> {
        self.alphas_cumprod.get(t).copied().ok_or(Error::Timestep {
            t,
            num_train_timesteps: self.num_train_timesteps(),
        })
    }

    /// Forward diffusion with per-sample timesteps:
    /// `x_t[b] = sqrt(abar_{t[b]}) x0[b] + sqrt(1 - abar_{t[b]}) noise[b]`
    /// (diffusers `add_noise`; paper Sec. 3.3 for the noisy condition).
    /// `x0` and `noise` are `(B, ...)` of the same shape and `t.len() == B`.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        let (a, b) = self.per_sample_coefficients(x0, noise, t, "add_noise")?;
        Ok((x0.broadcast_mul(&a)? + noise.broadcast_mul(&b)?)?)
    }

    /// The v-prediction target `v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0`
    /// (diffusers `get_velocity`), with per-sample timesteps.
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        let (a, b) = self.per_sample_coefficients(x0, noise, t, "velocity")?;
        Ok((noise.broadcast_mul(&a)? - x0.broadcast_mul(&b)?)?)
    }

    /// `(sqrt(abar_t), sqrt(1 - abar_t))` as `(B, 1, .., 1)` tensors in `x0`'s dtype.
    fn per_sample_coefficients(
        &self,
        x0: &Tensor,
        noise: &Tensor,
        t: &[usize],
        op: &'static str,
    ) -> Result<(Tensor, Tensor)> {
        if x0.dims() != noise.dims() {
            return Err(Error::shape(
                op,
                format!("noise of shape {:?}", x0.dims()),
                noise.dims(),
            ));
        }
        let batch = match x0.dims().first() {
            Some(&b) if b == t.len() => b,
            _ => {
                return Err(Error::shape(
                    op,
                    format!("(B, ...) with B = {} timesteps", t.len()),
                    x0.dims(),
                ))
            }
        };
        let mut sqrt_a = Vec::with_capacity(batch);
        let mut sqrt_b = Vec::with_capacity(batch);
        for &ti in t {
            let a = self.alpha_cumprod(ti)?;
            sqrt_a.push(a.sqrt());
            sqrt_b.push((1.0 - a).sqrt());
        }
        let mut shape = vec![1usize; x0.rank()];
        shape[0] = batch;
        let to = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)?
                .to_dtype(x0.dtype())?
                .to_device(x0.device())?)
        };
        Ok((to(sqrt_a)?, to(sqrt_b)?))
    }
}

/// `a * x + b * y` for scalar f64 coefficients, in the tensors' dtype.
pub(crate) fn axpby(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    Ok((x.affine(a, 0.0)? + y.affine(b, 0.0)?)?)
}

/// Checks that a tensor holds a floating-point dtype the schedulers can step.
pub(crate) fn ensure_float(op: &'static str, x: &Tensor) -> Result<()> {
    match x.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(()),
        other => Err(Error::config(
            op,
            format!("tensors must be floating point, got {other:?}"),
        )),
    }
}
