//! Ancestral DDPM sampling (Ho et al. 2020), reproducing diffusers' `DDPMScheduler`
//! (0.42) with `variance_type` `fixed_small` / `fixed_large`.
//!
//! With `abar_t`, `abar_prev` (1 at the end), `alpha_t = abar_t / abar_prev`, `beta_t = 1 - alpha_t`:
//!
//! `mu = sqrt(abar_prev) beta_t / (1 - abar_t) * x0 + sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t) * x_t`
//!
//! `x_prev = mu + sigma_t z` for `t > 0`, with `sigma_t^2 = max((1 - abar_prev) / (1 - abar_t) beta_t, 1e-20)`
//! (fixed_small, the posterior variance) or `sigma_t^2 = beta_t` (fixed_large).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::noise_schedule::{axpby, BetaSchedule, NoiseSchedule};
use crate::scheduler::{
    check_step_inputs, spaced_timesteps, PredictionType, Scheduler, StepOutput, TimestepSpacing,
};

/// The reverse-process variance of [`Ddpm`] (diffusers' `variance_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    /// The true posterior variance `beta~_t = (1 - abar_prev) / (1 - abar_t) beta_t`.
    #[default]
    FixedSmall,
    /// `beta_t` itself (the upper bound of Ho et al.).
    FixedLarge,
}

/// Configuration of a [`Ddpm`] scheduler; `Default` is diffusers' default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdpmConfig {
    /// `T` (diffusers `num_train_timesteps`), default 1000.
    pub num_train_timesteps: usize,
    /// The beta schedule, default linear 1e-4..0.02.
    pub beta_schedule: BetaSchedule,
    /// The reverse variance, default fixed_small.
    pub variance_type: VarianceType,
    /// What the model predicts, default epsilon.
    pub prediction_type: PredictionType,
    /// Clamp the predicted `x0` to `[-r, r]` (diffusers `clip_sample` + `clip_sample_range`);
    /// default `Some(1.0)`; `None` disables clipping.
    pub clip_sample: Option<f64>,
    /// Spacing of the inference timesteps when fewer than `T` are used.
    pub timestep_spacing: TimestepSpacing,
    /// Added to leading-spaced timesteps (diffusers `steps_offset`).
    pub steps_offset: usize,
    /// `None`: step through every `t = T-1..0` (diffusers without `set_timesteps`);
    /// `Some(n)`: `n` spaced timesteps (diffusers `set_timesteps(n)`).
    pub num_inference_steps: Option<usize>,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::ddpm_linear(),
            variance_type: VarianceType::FixedSmall,
            prediction_type: PredictionType::Epsilon,
            clip_sample: Some(1.0),
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            num_inference_steps: None,
        }
    }
}

impl DdpmConfig {
    /// DiffAD's schedule (scaled-linear 0.0015..0.02, T = 1000), epsilon prediction, no
    /// clipping (latents are not bounded to `[-1, 1]`), all 1000 steps.
    pub fn diffad() -> Self {
        Self {
            beta_schedule: BetaSchedule::diffad(),
            clip_sample: None,
            ..Self::default()
        }
    }
}

/// Ancestral DDPM sampler; see the module documentation for the update.
#[derive(Debug, Clone)]
pub struct Ddpm {
    config: DdpmConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
}

impl Ddpm {
    /// Builds the scheduler and its timesteps.
    pub fn new(config: DdpmConfig) -> Result<Self> {
        let schedule = NoiseSchedule::new(config.beta_schedule, config.num_train_timesteps)?;
        if let Some(r) = config.clip_sample {
            if r.is_nan() || r <= 0.0 {
                return Err(Error::config(
                    "DDPM",
                    format!("clip_sample range must be > 0, got {r}"),
                ));
            }
        }
        let timesteps = match config.num_inference_steps {
            None => (0..config.num_train_timesteps).rev().collect(),
            Some(n) => spaced_timesteps(
                config.timestep_spacing,
                config.num_train_timesteps,
                n,
                config.steps_offset,
            )?,
        };
        Ok(Self {
            config,
            schedule,
            timesteps,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DdpmConfig {
        &self.config
    }

    /// The timestep that follows `t` in [`Scheduler::timesteps`], or `None` after the last
    /// (diffusers' `previous_timestep`; `t - 1` when all T steps are used).
    pub fn previous_timestep(&self, t: usize) -> Result<Option<usize>> {
        if self.config.num_inference_steps.is_none() {
            return Ok(t.checked_sub(1));
        }
        let i = self.timesteps.iter().position(|&s| s == t).ok_or_else(|| {
            Error::config(
                "DDPM",
                format!("timestep {t} is not one of the scheduler's timesteps"),
            )
        })?;
        Ok(self.timesteps.get(i + 1).copied())
    }
}

impl Scheduler for Ddpm {
    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn needs_noise(&self, t: usize) -> bool {
        t > 0
    }

    fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_inputs("DDPM step", model_output, sample, noise)?;
        let alpha_prod_t = self.schedule.alpha_cumprod(t)?;
        let alpha_prod_t_prev = match self.previous_timestep(t)? {
            Some(p) => self.schedule.alpha_cumprod(p)?,
            None => 1.0,
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;

        let (mut x0, _) = self
            .config
            .prediction_type
            .split(model_output, sample, alpha_prod_t)?;
        if let Some(r) = self.config.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }

        // Posterior mean of q(x_{t-1} | x_t, x0), Ho et al. Eq. 7.
        let x0_coeff = alpha_prod_t_prev.sqrt() * current_beta_t / beta_prod_t;
        let xt_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let mut prev = axpby(x0_coeff, &x0, xt_coeff, sample)?;

        if self.needs_noise(t) {
            let noise = noise.ok_or(Error::MissingNoise {
                scheduler: "DDPM",
                t,
            })?;
            let variance = match self.config.variance_type {
                VarianceType::FixedSmall => {
                    (beta_prod_t_prev / beta_prod_t * current_beta_t).max(1e-20)
                }
                VarianceType::FixedLarge => current_beta_t,
            };
            prev = (prev + noise.affine(variance.sqrt(), 0.0)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}
