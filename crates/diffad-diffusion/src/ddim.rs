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

impl DdimConfig {
    /// The diffusers `DDIMScheduler` `scheduler_config.json` of this configuration (what
    /// `DDIMScheduler.from_pretrained` reads; [`from_diffusers_json`](Self::from_diffusers_json)
    /// reads it back). diffusers takes the number of steps and `eta` as arguments of
    /// `set_timesteps` and `step`, not from the config, so
    /// [`num_inference_steps`](Self::num_inference_steps) and [`eta`](Self::eta) are not
    /// written.
    pub fn to_diffusers_json(&self) -> String {
        let (beta_schedule, beta_start, beta_end) = match self.beta_schedule {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            } => ("linear", beta_start, beta_end),
            BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            } => ("scaled_linear", beta_start, beta_end),
            // diffusers ignores the betas' ends for the cosine schedule: its defaults
            BetaSchedule::SquaredCosCapV2 => ("squaredcos_cap_v2", 1e-4, 0.02),
        };
        let v = serde_json::json!({
            "_class_name": "DDIMScheduler",
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": beta_start,
            "beta_end": beta_end,
            "beta_schedule": beta_schedule,
            "trained_betas": null,
            "clip_sample": self.clip_sample.is_some(),
            "clip_sample_range": self.clip_sample.unwrap_or(1.0),
            "set_alpha_to_one": self.set_alpha_to_one,
            "steps_offset": self.steps_offset,
            "prediction_type": self.prediction_type,
            "timestep_spacing": self.timestep_spacing,
            "thresholding": false,
            "rescale_betas_zero_snr": false,
        });
        // A json! value of plain literals and unit enums always serialises.
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Reads a diffusers `DDIMScheduler` `scheduler_config.json`; missing keys take
    /// diffusers' defaults. [`num_inference_steps`](Self::num_inference_steps) and
    /// [`eta`](Self::eta), which diffusers passes at sampling time, keep
    /// [`Default`]'s values. Trained betas, dynamic thresholding and zero-terminal-SNR
    /// rescaling are not supported (an [`Error::Config`]).
    pub fn from_diffusers_json(json: &str) -> Result<Self> {
        let bad = |reason: String| Error::config("DDIMScheduler", reason);
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("config JSON: {e}")))?;
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        let f64_of = |k: &str, default: f64| -> Result<f64> {
            get(k).map_or(Ok(default), |x| {
                x.as_f64()
                    .ok_or_else(|| bad(format!("`{k}` must be a number")))
            })
        };
        let usize_of = |k: &str, default: usize| -> Result<usize> {
            get(k).map_or(Ok(default), |x| {
                x.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| bad(format!("`{k}` must be a non-negative integer")))
            })
        };
        let bool_of = |k: &str, default: bool| -> Result<bool> {
            get(k).map_or(Ok(default), |x| {
                x.as_bool()
                    .ok_or_else(|| bad(format!("`{k}` must be a boolean")))
            })
        };
        let enum_of = |k: &str, default: &str| -> serde_json::Value {
            get(k)
                .cloned()
                .unwrap_or_else(|| serde_json::Value::String(default.into()))
        };
        if get("trained_betas").is_some() {
            return Err(bad("`trained_betas` is not supported".into()));
        }
        for k in ["thresholding", "rescale_betas_zero_snr"] {
            if bool_of(k, false)? {
                return Err(bad(format!("`{k}` is not supported")));
            }
        }
        let beta_start = f64_of("beta_start", 1e-4)?;
        let beta_end = f64_of("beta_end", 0.02)?;
        let beta_schedule = match enum_of("beta_schedule", "linear").as_str() {
            Some("linear") => BetaSchedule::Linear {
                beta_start,
                beta_end,
            },
            Some("scaled_linear") => BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            },
            Some("squaredcos_cap_v2") => BetaSchedule::SquaredCosCapV2,
            other => return Err(bad(format!("beta_schedule {other:?} is not supported"))),
        };
        let prediction_type: PredictionType =
            serde_json::from_value(enum_of("prediction_type", "epsilon"))
                .map_err(|e| bad(format!("`prediction_type`: {e}")))?;
        let timestep_spacing: TimestepSpacing =
            serde_json::from_value(enum_of("timestep_spacing", "leading"))
                .map_err(|e| bad(format!("`timestep_spacing`: {e}")))?;
        let defaults = Self::default();
        Ok(Self {
            num_train_timesteps: usize_of("num_train_timesteps", 1000)?,
            beta_schedule,
            prediction_type,
            clip_sample: bool_of("clip_sample", true)?
                .then(|| f64_of("clip_sample_range", 1.0))
                .transpose()?,
            set_alpha_to_one: bool_of("set_alpha_to_one", true)?,
            steps_offset: usize_of("steps_offset", 0)?,
            timestep_spacing,
            ..defaults
        })
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
    /// forward-reverse reconstruction runs after its first step from `t_start` itself.
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
        let alpha_prod_t_prev = self.alpha_prod_prev(t)?;
        self.step_to_alpha(model_output, t, alpha_prod_t_prev, sample, noise)
    }
}

impl Ddim {
    /// One DDIM update from `t` to an arbitrary earlier timestep `t_prev` (not
    /// necessarily on the inference grid), with the same formula as
    /// [`Scheduler::step`]: `x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev -
    /// sigma^2) eps (+ sigma z)`, `sigma = eta sqrt((1 - abar_prev) / (1 - abar_t))
    /// sqrt(1 - abar_t / abar_prev)`. SDEdit uses it to go from its exact start
    /// `t_start` to the first grid timestep below it.
    pub fn step_to(
        &self,
        model_output: &Tensor,
        t: usize,
        t_prev: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        if t_prev >= t {
            return Err(Error::config(
                "DDIM step_to",
                format!("t_prev = {t_prev} must be below t = {t}"),
            ));
        }
        let alpha_prod_t_prev = self.schedule.alpha_cumprod(t_prev)?;
        self.step_to_alpha(model_output, t, alpha_prod_t_prev, sample, noise)
    }

    fn step_to_alpha(
        &self,
        model_output: &Tensor,
        t: usize,
        alpha_prod_t_prev: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_inputs("DDIM step", model_output, sample, noise)?;
        let alpha_prod_t = self.schedule.alpha_cumprod(t)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_json_round_trips() {
        let configs = [
            DdimConfig::diffad(),
            DdimConfig::default(),
            DdimConfig {
                beta_schedule: BetaSchedule::SquaredCosCapV2,
                prediction_type: PredictionType::VPrediction,
                timestep_spacing: TimestepSpacing::Trailing,
                clip_sample: Some(2.5),
                ..DdimConfig::default()
            },
        ];
        for c in configs {
            let json = c.to_diffusers_json();
            let back = DdimConfig {
                num_inference_steps: c.num_inference_steps,
                ..DdimConfig::from_diffusers_json(&json).unwrap()
            };
            assert_eq!(back, c, "{json}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&DdimConfig::diffad().to_diffusers_json()).unwrap();
        assert_eq!(v["beta_schedule"], "scaled_linear");
        assert_eq!(v["timestep_spacing"], "leading");
        assert_eq!(v["prediction_type"], "epsilon");
        assert_eq!(v["steps_offset"], 1);
        assert_eq!(v["set_alpha_to_one"], false);
        assert_eq!(v["clip_sample"], false);
    }

    #[test]
    fn unsupported_diffusers_options_are_errors() {
        for json in [
            r#"{"thresholding": true}"#,
            r#"{"beta_schedule": "sigmoid"}"#,
            r#"{"trained_betas": [0.1, 0.2]}"#,
            r#"{"timestep_spacing": "karras"}"#,
        ] {
            assert!(
                matches!(
                    DdimConfig::from_diffusers_json(json),
                    Err(Error::Config { .. })
                ),
                "{json}"
            );
        }
    }
}
