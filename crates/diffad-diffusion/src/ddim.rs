//! DDIM sampling (Song et al. 2021), reproducing diffusers' `DDIMScheduler` (0.42).
//!
//! With `prev = t - T / n` (integer division, as diffusers does for every spacing),
//! `abar_prev = abar[prev]`, or the *final alpha* when `prev < 0` (1 with
//! `set_alpha_to_one`, else `abar[0]`, CompVis' choice that DiffAD uses):
//!
//! `sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))`
//!
//! `x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma_t^2) eps + sigma_t z`
//!
//! `eta = 0` is the deterministic DDIM that DiffAD samples with (10 steps at test time,
//! 50 to train the segmentation network; `docs/reference.md` §3).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::noise_schedule::{axpby, BetaSchedule, NoiseSchedule};
use crate::scheduler::{
    check_step_inputs, spaced_timesteps, PredictionType, Scheduler, StepOutput, TimestepSpacing,
};

/// Configuration of a [`Ddim`] scheduler; `Default` is diffusers' default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdimConfig {
    /// `T` (diffusers `num_train_timesteps`), default 1000.
    pub num_train_timesteps: usize,
    /// The beta schedule, default linear 1e-4..0.02.
    pub beta_schedule: BetaSchedule,
    /// What the model predicts, default epsilon.
    pub prediction_type: PredictionType,
    /// Clamp the predicted `x0` to `[-r, r]` (diffusers `clip_sample` + `clip_sample_range`);
    /// default `Some(1.0)`; `None` disables clipping.
    pub clip_sample: Option<f64>,
    /// `abar_prev` of the last step: 1 if true, else `abar[0]` (diffusers `set_alpha_to_one`).
    pub set_alpha_to_one: bool,
    /// Added to leading-spaced timesteps (diffusers `steps_offset`).
    pub steps_offset: usize,
    /// Spacing of the inference timesteps.
    pub timestep_spacing: TimestepSpacing,
    /// Number of inference steps `n`.
    pub num_inference_steps: usize,
    /// Stochasticity `eta` in `[0, 1]`: 0 is deterministic DDIM, 1 is DDPM-like.
    pub eta: f64,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::ddpm_linear(),
            prediction_type: PredictionType::Epsilon,
            clip_sample: Some(1.0),
            set_alpha_to_one: true,
            steps_offset: 0,
            timestep_spacing: TimestepSpacing::Leading,
            num_inference_steps: 50,
            eta: 0.0,
        }
    }
}

impl DdimConfig {
    /// DiffAD / CompVis DDIM: scaled-linear 0.0015..0.02, T = 1000, timesteps
    /// `range(0, T, T/n) + 1` (leading, `steps_offset = 1`), `abar[0]` after the last
    /// step (`set_alpha_to_one = false`), epsilon, no clipping, eta 0, 10 steps
    /// (`docs/reference.md` §3).
    pub fn diffad() -> Self {
        Self {
            beta_schedule: BetaSchedule::diffad(),
            clip_sample: None,
            set_alpha_to_one: false,
            steps_offset: 1,
            num_inference_steps: 10,
            ..Self::default()
        }
    }
}

/// DDIM sampler; see the module documentation for the update.
#[derive(Debug, Clone)]
pub struct Ddim {
    config: DdimConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
    final_alpha_cumprod: f64,
}

impl Ddim {
    /// Builds the scheduler and its timesteps.
    pub fn new(config: DdimConfig) -> Result<Self> {
        let schedule = NoiseSchedule::new(config.beta_schedule, config.num_train_timesteps)?;
        if !(0.0..=1.0).contains(&config.eta) {
            return Err(Error::config(
                "DDIM",
                format!("eta must be in [0, 1], got {}", config.eta),
            ));
        }
        if let Some(r) = config.clip_sample {
            if r.is_nan() || r <= 0.0 {
                return Err(Error::config(
                    "DDIM",
                    format!("clip_sample range must be > 0, got {r}"),
                ));
            }
        }
        let timesteps = spaced_timesteps(
            config.timestep_spacing,
            config.num_train_timesteps,
            config.num_inference_steps,
            config.steps_offset,
        )?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        Ok(Self {
            config,
            schedule,
            timesteps,
            final_alpha_cumprod,
        })
    }

    /// The DiffAD test-time sampler (see [`DdimConfig::diffad`]).
    pub fn diffad() -> Result<Self> {
        Self::new(DdimConfig::diffad())
    }

    /// The configuration.
    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    /// A copy with `n` inference steps (diffusers' `set_timesteps(n)`).
    pub fn with_steps(&self, n: usize) -> Result<Self> {
        Self::new(DdimConfig {
            num_inference_steps: n,
            ..self.config.clone()
        })
    }

    /// A copy with stochasticity `eta`.
    pub fn with_eta(&self, eta: f64) -> Result<Self> {
        Self::new(DdimConfig {
            eta,
            ..self.config.clone()
        })
    }

    /// The inference timesteps not above `t_start`: the tail of the chain that SDEdit /
    /// forward-reverse reconstruction runs after noising the input to the first of them.
    pub fn timesteps_from(&self, t_start: usize) -> &[usize] {
        let first = self
            .timesteps
            .iter()
            .position(|&t| t <= t_start)
            .unwrap_or(self.timesteps.len());
        &self.timesteps[first..]
    }

    /// `t - T / n`, the timestep whose `abar` the step at `t` moves to (negative: final alpha).
    pub fn previous_timestep(&self, t: usize) -> i64 {
        t as i64 - (self.config.num_train_timesteps / self.config.num_inference_steps) as i64
    }

    fn alpha_prod_prev(&self, t: usize) -> Result<f64> {
        let prev = self.previous_timestep(t);
        if prev >= 0 {
            self.schedule.alpha_cumprod(prev as usize)
        } else {
            Ok(self.final_alpha_cumprod)
        }
    }
}

impl Scheduler for Ddim {
    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn prediction_type(&self) -> PredictionType {
        self.config.prediction_type
    }

    fn needs_noise(&self, _t: usize) -> bool {
        self.config.eta > 0.0
    }

    fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_inputs("DDIM step", model_output, sample, noise)?;
        let alpha_prod_t = self.schedule.alpha_cumprod(t)?;
        let alpha_prod_t_prev = self.alpha_prod_prev(t)?;
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;

        let (mut x0, eps) =
            self.config
                .prediction_type
                .split(model_output, sample, alpha_prod_t)?;
        if let Some(r) = self.config.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }

        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = self.config.eta * variance.sqrt();
        // Clamped at 0 so rounding can never produce a NaN for eta = 1.
        let direction = (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t)
            .max(0.0)
            .sqrt();
        let mut prev = axpby(alpha_prod_t_prev.sqrt(), &x0, direction, &eps)?;
        if self.needs_noise(t) {
            let noise = noise.ok_or(Error::MissingNoise {
                scheduler: "DDIM",
                t,
            })?;
            prev = (prev + noise.affine(std_dev_t, 0.0)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}
