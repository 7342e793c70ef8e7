//! Reconstruction `z_r` of a (possibly anomalous) latent `c = E(x_a)` by the reverse
//! process (paper Sec. 3.2-3.3; `docs/reference.md` §3: DDIM, eta 0, clean condition,
//! 10 steps at test time, 50 to train the segmentation network).
//!
//! Randomness is per sample: sample `i` of a call draws, in order, its initial noise
//! `z_T`, then (if asked) the condition noise `eps'`, then one noise per stochastic step,
//! from the stream [`crate::noise::sample_rng`]`(seed, RECONSTRUCT_PURPOSE, sample_offset + i)`.
//! Results therefore do not depend on the batch size or on the device's RNG.

use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use diffad_nn::latent::LatentCodec;

use crate::ddim::{Ddim, DdimConfig};
use crate::denoiser::{noisy_condition, ConditionMode, Denoiser};
use crate::error::{Error, Result};
use crate::noise::{gaussian_per_sample, sample_rng};
use crate::scheduler::Scheduler;

/// `u32` timesteps `(B)`: defined in [`crate::denoiser`], re-exported here for the old
/// path.
pub use crate::denoiser::timestep_tensor;

/// The `purpose` of the random streams of [`reconstruct`] (see [`crate::noise`]): keeps the
/// sampling noise (`z_T`, the condition noise, the stochastic steps' noise) apart from the
/// training streams drawn with the same seed. The bytes spell `"RECONS"`.
pub const RECONSTRUCT_PURPOSE: u64 = 0x5245_434f_4e53;

/// Options of [`reconstruct`]; `Default` is DiffAD's test-time sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructOptions {
    /// DDIM steps (10 at test time, 50 for training the segmentation net).
    pub steps: usize,
    /// DDIM stochasticity (0 in DiffAD).
    pub eta: f64,
    /// Which Table 1 variant to run (see [`ConditionMode`]).
    pub mode: ConditionMode,
    /// For the conditional modes: noise the condition to this `t_c` before sampling
    /// (`None`, the paper's default, uses the clean `c`; the authors suggest
    /// `t_c` in `[400, 500)` for severe structural defects).
    pub condition_t: Option<usize>,
    /// Seed of the per-sample random streams.
    pub seed: u64,
    /// Stream index of the first sample of the batch (e.g. its index in the data set), so
    /// a sample gets the same noise whichever batch it is in.
    pub sample_offset: u64,
    /// Every sample draws from the one stream `sample_offset` (the same noise for all)
    /// instead of `sample_offset + i`. With [`crate::UNet`], which embeds a timestep
    /// shared by the batch once, a sample's result is then bit-identical to the one it
    /// gets alone in a batch of one, wherever it sits in the batch (inference on
    /// unrelated images, whole batches through the denoiser).
    #[serde(default)]
    pub shared_stream: bool,
}

impl Default for ReconstructOptions {
    fn default() -> Self {
        Self {
            steps: 10,
            eta: 0.0,
            mode: ConditionMode::NoisyCondition,
            condition_t: None,
            seed: 0,
            sample_offset: 0,
            shared_stream: false,
        }
    }
}

/// Reconstructs the latents `condition` `(B, C, h, w)` (`c = E(x_a)`) with DDIM.
///
/// * `CleanCondition` / `NoisyCondition`: start from `z_T ~ N(0, I)` and run `opts.steps`
///   DDIM steps of `eps_theta(z_t, t, c~)` with `c~ = c` or, with
///   `condition_t = Some(t_c)`, `c~ = sqrt(abar_tc) c + sqrt(1 - abar_tc) eps'` (fixed for
///   the whole chain).
/// * `Unconditional`: the same chain without a condition (unconditional generation;
///   `condition` only gives the latent shape).
/// * `ForwardReverse { t_start }` (SDEdit): `z = sqrt(abar_t) c + sqrt(1 - abar_t) eps`
///   at exactly `t = t_start` (the same start for any step count), one DDIM step to the
///   first grid timestep below `t_start` if `t_start` is off the grid, then the DDIM
///   steps from there, without condition.
///
/// `scheduler` supplies the schedule, spacing and prediction type; its step count and
/// eta are replaced by `opts.steps` and `opts.eta`. The result has `condition`'s shape,
/// dtype and device.
pub fn reconstruct(
    denoiser: &dyn Denoiser,
    scheduler: &Ddim,
    condition: &Tensor,
    opts: &ReconstructOptions,
) -> Result<Tensor> {
    let (b, c, h, w) = condition.dims4().map_err(|_| {
        Error::shape(
            "reconstruct",
            "condition latents (B, C, h, w)",
            condition.dims(),
        )
    })?;
    if b == 0 {
        return Err(Error::Input("reconstruct: empty batch".into()));
    }
    let sched = if scheduler.config().num_inference_steps == opts.steps
        && scheduler.config().eta == opts.eta
    {
        scheduler.clone()
    } else {
        Ddim::new(DdimConfig {
            num_inference_steps: opts.steps,
            eta: opts.eta,
            ..scheduler.config().clone()
        })?
    };
    let (dtype, device) = (condition.dtype(), condition.device());
    let mut rngs: Vec<ChaCha8Rng> = (0..b as u64)
        .map(|i| {
            let stream = if opts.shared_stream { 0 } else { i };
            sample_rng(opts.seed, RECONSTRUCT_PURPOSE, opts.sample_offset + stream)
        })
        .collect();
    let per_sample = [c, h, w];
    let initial = gaussian_per_sample(&mut rngs, &per_sample, dtype, device)?;
    match opts.mode {
        ConditionMode::CleanCondition | ConditionMode::NoisyCondition => {
            let cond = match opts.condition_t {
                None => condition.clone(),
                Some(t_c) => {
                    let eps = gaussian_per_sample(&mut rngs, &per_sample, dtype, device)?;
                    noisy_condition(sched.noise_schedule(), condition, &vec![t_c; b], &eps)?
                }
            };
            denoise(
                denoiser,
                &sched,
                &initial,
                sched.timesteps(),
                Some(&cond),
                &mut rngs,
            )
        }
        ConditionMode::Unconditional => denoise(
            denoiser,
            &sched,
            &initial,
            sched.timesteps(),
            None,
            &mut rngs,
        ),
        ConditionMode::ForwardReverse { t_start } => {
            let big_t = sched.noise_schedule().num_train_timesteps();
            if t_start >= big_t {
                return Err(Error::Timestep {
                    t: t_start,
                    num_train_timesteps: big_t,
                });
            }
            // The input is noised to exactly `t_start` whatever the step count, so the
            // 50-step chain that trains the segmenter and the 10-step test chain start
            // from the same noise level; an off-grid start takes one DDIM step to the
            // first grid timestep below it.
            let mut x = sched.add_noise(condition, &initial, &vec![t_start; b])?;
            let timesteps = sched.timesteps_from(t_start);
            let rest = match timesteps.first() {
                Some(&t0) if t0 == t_start => timesteps,
                first => {
                    let t_tensor = Tensor::from_vec(vec![t_start as u32; b], b, device)?;
                    let eps = denoiser.predict(&x, &t_tensor, None)?.detach();
                    let noise = if sched.needs_noise(t_start) {
                        Some(gaussian_per_sample(&mut rngs, &per_sample, dtype, device)?)
                    } else {
                        None
                    };
                    x = match first {
                        Some(&t1) => sched.step_to(&eps, t_start, t1, &x, noise.as_ref())?,
                        // No grid timestep below: the regular final step.
                        None => sched.step(&eps, t_start, &x, noise.as_ref())?,
                    }
                    .prev_sample;
                    timesteps
                }
            };
            denoise(denoiser, &sched, &x, rest, None, &mut rngs)
        }
    }
}

/// Runs the reverse chain of `scheduler` over `timesteps` (descending) from `start`,
/// with an optional fixed condition; stochastic steps draw noise from `rngs` (one stream
/// per sample). Returns the final sample.
pub fn denoise(
    denoiser: &dyn Denoiser,
    scheduler: &dyn Scheduler,
    start: &Tensor,
    timesteps: &[usize],
    condition: Option<&Tensor>,
    rngs: &mut [ChaCha8Rng],
) -> Result<Tensor> {
    let dims = start.dims().to_vec();
    let b = dims.first().copied().unwrap_or(0);
    if rngs.len() != b {
        return Err(Error::shape(
            "denoise",
            format!("{} random streams", rngs.len()),
            &dims,
        ));
    }
    let mut x = start.clone();
    for &t in timesteps {
        let t_tensor = Tensor::from_vec(vec![t as u32; b], b, start.device())?;
        // Sampling needs no gradient: detaching stops a denoiser built on trainable
        // variables from chaining every step's graph (and activations) into the next.
        let model_output = denoiser.predict(&x, &t_tensor, condition)?.detach();
        let noise = if scheduler.needs_noise(t) {
            Some(gaussian_per_sample(
                rngs,
                &dims[1..],
                x.dtype(),
                x.device(),
            )?)
        } else {
            None
        };
        x = scheduler
            .step(&model_output, t, &x, noise.as_ref())?
            .prev_sample;
    }
    Ok(x)
}

/// Convenience for image pipelines: encodes `images` `(B, 3, H, W)` in `[0, 1]` with the
/// codec (posterior mode, `c = E(x_a)`), reconstructs with [`reconstruct`], and decodes:
/// returns `(z_r, x_r = D(z_r))`.
pub fn reconstruct_images(
    codec: &dyn LatentCodec,
    denoiser: &dyn Denoiser,
    scheduler: &Ddim,
    images: &Tensor,
    opts: &ReconstructOptions,
) -> Result<(Tensor, Tensor)> {
    let c = codec.encode(images)?;
    let z_r = reconstruct(denoiser, scheduler, &c, opts)?;
    let x_r = codec.decode(&z_r)?;
    Ok((z_r, x_r))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use candle_core::{Device, Tensor};

    use super::*;

    /// A denoiser predicting zero noise that records the timesteps it is asked at.
    struct Recorder(RefCell<Vec<u32>>);

    impl Denoiser for Recorder {
        fn predict(
            &self,
            z_t: &Tensor,
            t: &Tensor,
            _condition: Option<&Tensor>,
        ) -> candle_core::Result<Tensor> {
            self.0.borrow_mut().push(t.to_vec1::<u32>()?[0]);
            z_t.zeros_like()
        }
    }

    fn sdedit_timesteps(steps: usize, t_start: usize) -> Vec<u32> {
        let recorder = Recorder(RefCell::new(Vec::new()));
        let c = Tensor::zeros((1, 4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let opts = ReconstructOptions {
            steps,
            mode: ConditionMode::ForwardReverse { t_start },
            ..ReconstructOptions::default()
        };
        reconstruct(&recorder, &Ddim::diffad().unwrap(), &c, &opts).unwrap();
        recorder.0.into_inner()
    }

    #[test]
    fn sdedit_starts_at_t_start_whatever_the_step_count() {
        // The segmenter's 50-step chain and the 10-step test chain start alike.
        let ten = sdedit_timesteps(10, 500);
        let fifty = sdedit_timesteps(50, 500);
        assert_eq!(ten[0], 500);
        assert_eq!(fifty[0], 500);
        // Then the grid below the start: 401, 301, ..., 1 and 481, 461, ..., 1.
        assert_eq!(&ten[1..], &[401, 301, 201, 101, 1]);
        assert_eq!(fifty[1], 481);
        assert_eq!(*fifty.last().unwrap(), 1);
        // A start on the grid takes no extra step.
        assert_eq!(sdedit_timesteps(10, 401), vec![401, 301, 201, 101, 1]);
    }
}
