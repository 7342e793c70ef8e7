//! The [`Scheduler`] trait shared by [`crate::Ddpm`] and [`crate::Ddim`], and the
//! options both take (prediction type, timestep spacing).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::noise_schedule::NoiseSchedule;

/// What the denoiser predicts (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise `eps` (paper Eq. 1-3; DiffAD's choice).
    #[default]
    Epsilon,
    /// The clean sample `x0`.
    Sample,
    /// The velocity `v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0` (Salimans & Ho).
    VPrediction,
}

impl PredictionType {
    /// Recovers `(x0, eps)` from a model output at `abar_t` for the sample `x_t`
    /// (diffusers' DDIM step, part 2).
    pub(crate) fn split(
        self,
        model_output: &Tensor,
        sample: &Tensor,
        alpha_prod_t: f64,
    ) -> Result<(Tensor, Tensor)> {
        use crate::noise_schedule::axpby;
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (sa, sb) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());
        Ok(match self {
            // x0 = (x - sqrt(1-abar) eps) / sqrt(abar)
            Self::Epsilon => (
                axpby(1.0 / sa, sample, -sb / sa, model_output)?,
                model_output.clone(),
            ),
            // eps = (x - sqrt(abar) x0) / sqrt(1-abar)
            Self::Sample => (
                model_output.clone(),
                axpby(1.0 / sb, sample, -sa / sb, model_output)?,
            ),
            // x0 = sqrt(abar) x - sqrt(1-abar) v ; eps = sqrt(abar) v + sqrt(1-abar) x
            Self::VPrediction => (
                axpby(sa, sample, -sb, model_output)?,
                axpby(sa, model_output, sb, sample)?,
            ),
        })
    }
}

/// How inference timesteps are spread over `0..T` (diffusers' `timestep_spacing`;
/// table 2 of Lin et al., "Common diffusion noise schedules and sample steps are flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `(0..n) * (T / n)` reversed, plus `steps_offset` (CompVis / DiffAD with offset 1).
    #[default]
    Leading,
    /// `round(arange(T, 0, -T/n)) - 1` (round half to even, as numpy), first `n` values.
    Trailing,
    /// `round(linspace(0, T - 1, n))` reversed.
    Linspace,
}

/// Inference timesteps in descending order, exactly as diffusers'
/// `set_timesteps(num_inference_steps)` computes them for this spacing.
pub fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: usize,
) -> Result<Vec<usize>> {
    let big_t = num_train_timesteps;
    let n = num_inference_steps;
    if n == 0 || n > big_t {
        return Err(Error::config(
            "scheduler",
            format!("num_inference_steps must be in 1..={big_t}, got {n}"),
        ));
    }
    let signed: Vec<i64> = match spacing {
        TimestepSpacing::Leading => {
            let ratio = big_t / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            // numpy: element i = start + i * step. numpy's float `arange` can yield a
            // spurious (n+1)-th element that becomes timestep -1 (e.g. n = 227), which
            // diffusers 0.42 returns as is; we keep the first n.
            let step = big_t as f64 / n as f64;
            (0..n)
                .map(|i| (big_t as f64 - i as f64 * step).round_ties_even() as i64 - 1)
                .collect()
        }
        TimestepSpacing::Linspace => {
            let stop = (big_t - 1) as f64;
            let values: Vec<f64> = if n == 1 {
                vec![0.0]
            } else {
                let step = stop / (n - 1) as f64;
                (0..n)
                    .map(|i| if i == n - 1 { stop } else { i as f64 * step })
                    .collect()
            };
            values
                .into_iter()
                .rev()
                .map(|v| v.round_ties_even() as i64)
                .collect()
        }
    };
    signed
        .into_iter()
        .map(|t| {
            if t < 0 || t as usize >= big_t {
                Err(Error::config(
                    "scheduler",
                    format!(
                        "{spacing:?} spacing with {n} steps and steps_offset {steps_offset} gives \
                         timestep {t}, outside 0..{big_t}"
                    ),
                ))
            } else {
                Ok(t as usize)
            }
        })
        .collect()
}

/// The result of one reverse step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// `x_{t-1}` (or the sample at the previous inference timestep).
    pub prev_sample: Tensor,
    /// The model's estimate of `x_0` at this step (after optional clipping).
    pub pred_original_sample: Tensor,
}

/// A reverse-diffusion sampler over a [`NoiseSchedule`] (diffusers' scheduler API).
///
/// Stochastic steps take their Gaussian noise as an argument instead of drawing it:
/// the caller owns the random streams (see [`crate::noise`]), which keeps results
/// independent of the device and of how samples are batched.
pub trait Scheduler {
    /// The schedule stepped over.
    fn noise_schedule(&self) -> &NoiseSchedule;

    /// The inference timesteps, in descending order.
    fn timesteps(&self) -> &[usize];

    /// What the denoiser is expected to predict.
    fn prediction_type(&self) -> PredictionType;

    /// Whether [`Scheduler::step`] at `t` needs a noise tensor.
    fn needs_noise(&self, t: usize) -> bool;

    /// One reverse step from `sample` = `x_t` given the model output at `t`.
    /// `noise` (standard normal, shaped like `sample`) is required when
    /// [`Scheduler::needs_noise`] is true and ignored otherwise.
    fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput>;

    /// Forward diffusion with per-sample timesteps (see [`NoiseSchedule::add_noise`]).
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        self.noise_schedule().add_noise(x0, noise, t)
    }
}

/// Shared argument checks of a step.
pub(crate) fn check_step_inputs(
    op: &'static str,
    model_output: &Tensor,
    sample: &Tensor,
    noise: Option<&Tensor>,
) -> Result<()> {
    crate::noise_schedule::ensure_float(op, sample)?;
    if model_output.dims() != sample.dims() {
        return Err(Error::shape(
            op,
            format!("model output of the sample's shape {:?}", sample.dims()),
            model_output.dims(),
        ));
    }
    if let Some(n) = noise {
        if n.dims() != sample.dims() {
            return Err(Error::shape(
                op,
                format!("noise of the sample's shape {:?}", sample.dims()),
                n.dims(),
            ));
        }
    }
    Ok(())
}
