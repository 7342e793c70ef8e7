//! # diffad-diffusion: the latent diffusion model of DiffAD
//!
//! The reconstructive sub-network of DiffAD (Zhang et al., ICCV 2023, Sec. 3.2-3.3): a
//! latent diffusion model whose denoiser `eps_theta(z_t, t, c)` is conditioned on the
//! latent `c = E(x_a)` of a (simulated) anomalous image through the **noisy condition
//! embedding** `c_noisy = sqrt(abar_tc) c + sqrt(1 - abar_tc) eps'`.
//!
//! * [`NoiseSchedule`] / [`BetaSchedule`] ([`noise_schedule`]): linear, scaled-linear
//!   (CompVis, DiffAD) and cosine schedules in `f64`;
//! * the [`Scheduler`] trait ([`scheduler`]) with [`Ddpm`] and [`Ddim`] (one file each):
//!   diffusers' `DDPMScheduler` and
//!   `DDIMScheduler` step for step (epsilon / sample / v prediction, clipping, leading /
//!   trailing / linspace spacing, `steps_offset`, `set_alpha_to_one`, eta);
//! * [`Denoiser`] and [`UNet`]: diffusers' `UNet2DModel` with its parameter names, built
//!   from the blocks of `diffad-nn`; [`UNetConfig::diffad`] is the paper's 258M-parameter
//!   network;
//! * [`ConditionMode`]: the rows of the paper's Table 1 (`Unconditional`,
//!   `CleanCondition`, `NoisyCondition`, `ForwardReverse`/SDEdit), used by both training
//!   and [`reconstruct()`];
//! * [`LdmTrainer`]: epsilon-MSE training on latents or on images through a
//!   [`diffad_nn::latent::LatentCodec`], AdamW, EMA, clipping (from `diffad-nn`), atomic
//!   checkpoints and resume; progress goes to a [`Progress`] callback (the crate never
//!   prints).
//!
//! All randomness comes from per-sample ChaCha streams ([`noise`]) drawn on the CPU, so
//! results are reproducible for a seed on any device and batch split.
//!
//! Modules use each other one way: `error` ← `noise_schedule` ← `scheduler` ←
//! `ddpm`, `ddim`; `denoiser` (trait, timesteps, Table 1 modes) ← `unet` (the network),
//! `reconstruct` (sampling) and `trainer` (training wiring). The network never imports
//! its trainer.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::VarMap;
//! use diffad_diffusion::noise::{gaussian_per_sample, sample_rng};
//! use diffad_diffusion::{reconstruct, ConditionMode, Ddim, ReconstructOptions, UNet, UNetConfig};
//!
//! let dev = Device::Cpu;
//! // A small conditional denoiser (8 input channels = 4 latent + 4 condition).
//! let varmap = VarMap::new();
//! let vb = diffad_nn::init::seeded_var_builder(&varmap, 0, DType::F32, &dev);
//! let unet = UNet::new(UNetConfig::tiny(), vb)?;
//! // The condition c = E(x_a): here random latents (B, 4, 8, 8).
//! let mut rngs = vec![sample_rng(1, 0, 0), sample_rng(1, 0, 1)];
//! let c = gaussian_per_sample(&mut rngs, &[4, 8, 8], DType::F32, &dev)?;
//! // DiffAD's sampler: DDIM, eta 0, clean condition; 2 steps to keep the doctest fast.
//! let opts = ReconstructOptions {
//!     steps: 2,
//!     mode: ConditionMode::NoisyCondition,
//!     seed: 7,
//!     ..Default::default()
//! };
//! let z_r = reconstruct(&unet, &Ddim::diffad()?, &c, &opts)?;
//! assert_eq!(z_r.dims(), &[2, 4, 8, 8]);
//! // Same seed, same result.
//! let again = reconstruct(&unet, &Ddim::diffad()?, &c, &opts)?;
//! let diff = (z_r - again)?.abs()?.sum_all()?.to_scalar::<f32>()?;
//! assert_eq!(diff, 0.0);
//! # Ok::<(), diffad_diffusion::Error>(())
//! ```

pub mod ddim;
pub mod ddpm;
pub mod denoiser;
pub mod error;
pub mod noise;
pub mod noise_schedule;
pub mod reconstruct;
pub mod scheduler;
pub mod trainer;
pub mod unet;

pub use ddim::{Ddim, DdimConfig};
pub use ddpm::{Ddpm, DdpmConfig, VarianceType};
pub use denoiser::{noisy_condition, timestep_tensor, ConditionMode, Denoiser};
/// The optimiser, EMA and clipping the trainer uses (shared with the other crates).
pub use diffad_nn::optim::{clip_grad_norm, AdamW, AdamWConfig, Ema};
/// The progress callback of the training loops (shared with the other crates).
pub use diffad_nn::progress::{Progress, Silent};
pub use error::{Error, Result};
pub use noise_schedule::{BetaSchedule, NoiseSchedule};
pub use reconstruct::{denoise, reconstruct, reconstruct_images, ReconstructOptions};
pub use scheduler::{spaced_timesteps, PredictionType, Scheduler, StepOutput, TimestepSpacing};
pub use trainer::{
    diffusion_loss, LdmTrainConfig, LdmTrainer, TrainLoopOptions, TrainSummary, TrainingDraws,
};
pub use unet::{concat_condition, UNet, UNetConfig};
