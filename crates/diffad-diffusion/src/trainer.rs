//! Training the conditional LDM (paper Sec. 3.2-3.3; `docs/reference.md` §3):
//!
//! ```text
//! t ~ U{0..T-1},  eps ~ N(0, I),  z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps
//! NoisyCondition:  t_c ~ U{0..T-1} independent of t,  c~ = sqrt(abar_tc) c + sqrt(1 - abar_tc) eps'
//! CleanCondition:  c~ = c          Unconditional / ForwardReverse: no condition
//! L = mean || target - eps_theta(z_t, t, c~) ||^2     (target = eps for epsilon prediction)
//! ```
//!
//! `z` is a posterior sample of `E(x)` of a normal image and `c = E(x_a)` the latent of its
//! simulated anomalous version. The network ([`UNet`]), the loss ([`diffusion_loss`]) and
//! this wiring are separate, as in anomalib. Optimiser: `diffad-nn`'s [`AdamW`] (with
//! checkpointable moments); its [`Ema`] of the weights; global-norm clipping; checkpoints
//! are one safetensors file written atomically (`path.tmp`, then rename) holding the
//! weights, the EMA, the AdamW moments and the configuration, so training resumes exactly.
//! The loops report to a [`Progress`] callback and never print.
//!
//! Random streams (see [`crate::noise`]): the initial weights come from
//! [`LdmTrainConfig::seed`] (per parameter name, `diffad_nn::init`); optimiser step `s`
//! draws its `t`, `eps`, `t_c` and `eps'` from
//! [`sample_rng`]`(`[`step_seed`](LdmTrainer::step_seed)`(s), `[`TRAIN_PURPOSE`]`, i)` and,
//! in [`LdmTrainer::train_on_images`], the posterior sample of image `i` from
//! `sample_rng(step_seed(s), `[`POSTERIOR_PURPOSE`]`, i)`: the step separates the steps,
//! the purpose what the noise is for, the stream index the samples.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffad_nn::latent::LatentCodec;
use diffad_nn::progress::Progress;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::denoiser::{noisy_condition, timestep_tensor, ConditionMode, Denoiser};
use crate::error::{file_error, Error, Result};
use crate::noise::{gaussian_per_sample, mix_seed, sample_rng};
use crate::noise_schedule::{BetaSchedule, NoiseSchedule};
use crate::scheduler::PredictionType;
use crate::unet::{concat_condition, UNet, UNetConfig};
use diffad_nn::checkpoint::{load_varmap_from, save_tensors, TensorFile};
use diffad_nn::optim::{clip_grad_norm, AdamW, AdamWConfig, Ema};

/// The `purpose` of the random streams of a training step (see [`crate::noise`]): the
/// timesteps `t`, `t_c` and the noises `eps`, `eps'`, apart from the posterior samples and
/// from sampling. The bytes spell `"TRAIN"`.
pub const TRAIN_PURPOSE: u64 = 0x0054_5241_494e;
/// The `purpose` of the posterior-sampling streams of the image loop
/// ([`LdmTrainer::train_on_images`]: `z = mu + sigma n`), apart from the step's own draws.
/// The bytes spell `"POST"`.
pub const POSTERIOR_PURPOSE: u64 = 0x504f_5354;

/// `mean((target - prediction)^2)` over all elements (PyTorch `F.mse_loss`).
pub fn diffusion_loss(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    if prediction.dims() != target.dims() {
        return Err(Error::shape(
            "diffusion_loss",
            format!("{:?}", target.dims()),
            prediction.dims(),
        ));
    }
    Ok((prediction - target)?.sqr()?.mean_all()?)
}

/// Configuration of an [`LdmTrainer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LdmTrainConfig {
    /// How the condition enters training (default: the paper's noisy condition).
    pub mode: ConditionMode,
    /// The beta schedule (default DiffAD's scaled-linear 0.0015..0.02).
    pub beta_schedule: BetaSchedule,
    /// `T` (default 1000).
    pub num_train_timesteps: usize,
    /// What the network predicts (default epsilon, as DiffAD).
    pub prediction_type: PredictionType,
    /// AdamW hyper-parameters (DiffAD: lr 2e-6 x batch 32 = 6.4e-5).
    pub optimizer: AdamWConfig,
    /// EMA decay of the weights; `None` disables the EMA (CompVis default 0.9999).
    pub ema_decay: Option<f64>,
    /// CompVis' EMA warm-up `min(decay, (1 + n) / (10 + n))`.
    pub ema_warmup: bool,
    /// Clip the global gradient norm to this value (`None`: no clipping, as CompVis).
    pub grad_clip: Option<f64>,
    /// Seed of the initial weights and of the per-step, per-sample random streams (see
    /// the module doc).
    pub seed: u64,
}

impl Default for LdmTrainConfig {
    fn default() -> Self {
        Self {
            mode: ConditionMode::NoisyCondition,
            beta_schedule: BetaSchedule::diffad(),
            num_train_timesteps: 1000,
            prediction_type: PredictionType::Epsilon,
            optimizer: AdamWConfig {
                lr: 6.4e-5,
                ..AdamWConfig::default()
            },
            ema_decay: Some(0.9999),
            ema_warmup: true,
            grad_clip: None,
            seed: 0,
        }
    }
}

/// Options of the training loops ([`LdmTrainer::train`],
/// [`LdmTrainer::train_on_images`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainLoopOptions {
    /// Stop after this many optimiser steps in this call (`None`: until the batches end).
    pub max_steps: Option<u64>,
    /// Write a checkpoint here every `checkpoint_every` steps and at the end.
    pub checkpoint: Option<std::path::PathBuf>,
    /// Checkpoint period in steps (0 or `None`: only at the end).
    pub checkpoint_every: Option<u64>,
}

/// The random draws of one training batch (see [`LdmTrainer::training_draws`]).
#[derive(Debug, Clone)]
pub struct TrainingDraws {
    /// Denoising timesteps `t`, one per sample.
    pub t: Vec<usize>,
    /// The noise `eps` added to `z` (the regression target for epsilon prediction).
    pub eps: Tensor,
    /// Condition timesteps `t_c` (empty unless the mode is
    /// [`ConditionMode::NoisyCondition`]).
    pub t_c: Vec<usize>,
    /// The condition noise `eps'` (noisy mode only).
    pub condition_eps: Option<Tensor>,
}

/// What a training loop did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Optimiser steps taken in this call.
    pub steps: u64,
    /// The trainer's [`step`](LdmTrainer::step) afterwards (optimiser steps over the whole
    /// run).
    pub step: u64,
    /// Mean loss over the steps of this call.
    pub mean_loss: f32,
    /// Loss of the last step.
    pub last_loss: f32,
    /// Throughput of this call.
    pub steps_per_second: f64,
}

/// Trains a [`UNet`] denoiser on latents (see the module documentation).
pub struct LdmTrainer {
    config: LdmTrainConfig,
    unet_config: UNetConfig,
    schedule: NoiseSchedule,
    varmap: VarMap,
    unet: UNet,
    params: Vec<(String, candle_core::Var)>,
    optimizer: AdamW,
    ema: Option<Ema>,
    step: u64,
    device: Device,
}

impl LdmTrainer {
    /// A fresh trainer: the UNet is initialised with PyTorch's default initialisation drawn
    /// from `config.seed` (reproducible, on the CPU), in `f32` on `device`.
    pub fn new(unet_config: UNetConfig, config: LdmTrainConfig, device: &Device) -> Result<Self> {
        let conditional = config.mode.is_conditional();
        if conditional && unet_config.in_channels <= unet_config.out_channels {
            return Err(Error::config(
                "trainer",
                format!(
                    "{:?} needs condition channels: in_channels {} must exceed out_channels {}",
                    config.mode, unet_config.in_channels, unet_config.out_channels
                ),
            ));
        }
        if !conditional && unet_config.in_channels != unet_config.out_channels {
            return Err(Error::config(
                "trainer",
                format!(
                    "{:?} trains an unconditional model: in_channels {} must equal out_channels {}",
                    config.mode, unet_config.in_channels, unet_config.out_channels
                ),
            ));
        }
        let schedule = NoiseSchedule::new(config.beta_schedule, config.num_train_timesteps)?;
        let varmap = VarMap::new();
        let vb = diffad_nn::init::seeded_var_builder(&varmap, config.seed, DType::F32, device);
        let unet = UNet::new(unet_config.clone(), vb)?;
        let params = diffad_nn::testing::named_vars(&varmap)?;
        let optimizer = AdamW::new(params.clone(), config.optimizer)?;
        let ema = match config.ema_decay {
            Some(d) => Some(Ema::new(&params, d, config.ema_warmup)?),
            None => None,
        };
        Ok(Self {
            config,
            unet_config,
            schedule,
            varmap,
            unet,
            params,
            optimizer,
            ema,
            step: 0,
            device: device.clone(),
        })
    }

    /// The network being trained.
    pub fn unet(&self) -> &UNet {
        &self.unet
    }

    /// The variables of the network (diffusers names).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The training configuration.
    pub fn config(&self) -> &LdmTrainConfig {
        &self.config
    }

    /// The noise schedule trained on.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Optimiser steps taken so far (over the whole run, including those before a resume).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The optimiser (its moments and step count).
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// Changes the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.optimizer.set_lr(lr);
        self.config.optimizer.lr = lr;
    }

    /// A copy of the network with the EMA weights (the raw weights when the EMA is off),
    /// the one to sample with.
    pub fn ema_unet(&self) -> Result<UNet> {
        let tensors: HashMap<String, Tensor> = match &self.ema {
            Some(ema) => ema.weights().iter().cloned().collect(),
            None => self
                .params
                .iter()
                .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
                .collect::<Result<_>>()?,
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &self.device);
        UNet::new(self.unet_config.clone(), vb)
    }

    /// The loss of one batch without updating anything (`train` enables dropout).
    /// `z` `(B, C, h, w)`: posterior samples of `E(x)`; `c`: `E(x_a)` of the same shape
    /// (ignored by the unconditional modes). Randomness comes from `seed` (per sample).
    pub fn loss(&self, z: &Tensor, c: &Tensor, seed: u64, train: bool) -> Result<Tensor> {
        let (b, ch, h, w) = z
            .dims4()
            .map_err(|_| Error::shape("LdmTrainer", "latents z (B, C, h, w)", z.dims()))?;
        if b == 0 {
            return Err(Error::Input("LdmTrainer: empty batch".into()));
        }
        if self.config.mode.is_conditional()
            && c.dims4().map(|d| (d.0, d.2, d.3)).ok() != Some((b, h, w))
        {
            return Err(Error::shape(
                "LdmTrainer",
                format!("condition ({b}, Cc, {h}, {w})"),
                c.dims(),
            ));
        }
        let z = z.to_device(&self.device)?.to_dtype(DType::F32)?.detach();
        let cc = if self.config.mode.is_conditional() {
            c.dim(1)?
        } else {
            0
        };
        let draws = self.training_draws(seed, b, [ch, h, w], cc)?;
        let z_t = self.schedule.add_noise(&z, &draws.eps, &draws.t)?;
        let cond = match self.config.mode {
            ConditionMode::CleanCondition => {
                Some(c.to_device(&self.device)?.to_dtype(DType::F32)?.detach())
            }
            ConditionMode::NoisyCondition => {
                let c = c.to_device(&self.device)?.to_dtype(DType::F32)?.detach();
                let eps_c = draws
                    .condition_eps
                    .as_ref()
                    .ok_or_else(|| Error::config("trainer", "no condition noise drawn"))?;
                Some(noisy_condition(&self.schedule, &c, &draws.t_c, eps_c)?)
            }
            ConditionMode::Unconditional | ConditionMode::ForwardReverse { .. } => None,
        };
        let t = draws.t;
        let eps = draws.eps;
        let x = concat_condition(&z_t, cond.as_ref(), self.unet_config.in_channels)?;
        let t_tensor = timestep_tensor(&t, &self.device)?;
        let prediction = self.unet.forward(&x, &t_tensor, train)?;
        let target = match self.config.prediction_type {
            PredictionType::Epsilon => eps,
            PredictionType::Sample => z,
            PredictionType::VPrediction => self.schedule.velocity(&z, &eps, &t)?,
        };
        diffusion_loss(&prediction, &target)
    }

    /// The random quantities of one training batch, drawn per sample `i` from
    /// [`sample_rng`]`(seed, TRAIN_PURPOSE, i)` in this order: `t ~ U{0..T-1}`, `eps`
    /// (`latent` shape), and for [`ConditionMode::NoisyCondition`] (`condition_channels > 0`)
    /// `t_c ~ U{0..T-1}`, drawn independently of `t`, and `eps'`.
    pub fn training_draws(
        &self,
        seed: u64,
        batch: usize,
        latent: [usize; 3],
        condition_channels: usize,
    ) -> Result<TrainingDraws> {
        let big_t = self.schedule.num_train_timesteps();
        let mut rngs: Vec<ChaCha8Rng> = (0..batch as u64)
            .map(|i| sample_rng(seed, TRAIN_PURPOSE, i))
            .collect();
        let t: Vec<usize> = rngs.iter_mut().map(|r| r.random_range(0..big_t)).collect();
        let eps = gaussian_per_sample(&mut rngs, &latent, DType::F32, &self.device)?;
        let (t_c, condition_eps) =
            if self.config.mode == ConditionMode::NoisyCondition && condition_channels > 0 {
                let t_c: Vec<usize> = rngs.iter_mut().map(|r| r.random_range(0..big_t)).collect();
                let shape = [condition_channels, latent[1], latent[2]];
                (
                    t_c,
                    Some(gaussian_per_sample(
                        &mut rngs,
                        &shape,
                        DType::F32,
                        &self.device,
                    )?),
                )
            } else {
                (Vec::new(), None)
            };
        Ok(TrainingDraws {
            t,
            eps,
            t_c,
            condition_eps,
        })
    }

    /// One optimiser step on a batch (see [`LdmTrainer::loss`]); returns the loss.
    pub fn train_step(&mut self, z: &Tensor, c: &Tensor, seed: u64) -> Result<f32> {
        let loss = self.loss(z, c, seed, true)?;
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                loss: value,
                step: self.step,
            });
        }
        let mut grads = loss.backward()?;
        if let Some(max_norm) = self.config.grad_clip {
            clip_grad_norm(&self.params, &mut grads, max_norm)?;
        }
        self.optimizer.step(&grads)?;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.params)?;
        }
        self.step += 1;
        Ok(value)
    }

    /// The seed of optimiser step `step`, `mix_seed(config.seed, step)` (the loops pass it
    /// to [`LdmTrainer::train_step`]): a different seed for every step of the run.
    pub fn step_seed(&self, step: u64) -> u64 {
        mix_seed(self.config.seed, step)
    }

    /// Trains on batches of latents `(z, c)`: `z` posterior samples of `E(x)`, `c` the
    /// latents of the anomalous versions (any tensor of the right shape for unconditional
    /// modes), until the batches or `opts.max_steps` run out, reporting every step to
    /// `progress`. Errors of the iterator are passed through as [`Error::Input`].
    pub fn train<I, E>(
        &mut self,
        batches: I,
        opts: &TrainLoopOptions,
        progress: &mut dyn Progress,
    ) -> Result<TrainSummary>
    where
        I: IntoIterator<Item = std::result::Result<(Tensor, Tensor), E>>,
        E: std::fmt::Display,
    {
        self.run_loop(batches, opts, progress, |_, z, c| Ok((z, c)))
    }

    /// Trains on batches of images `(x, x_a)` `(B, 3, H, W)` in `[0, 1]`: normal images and
    /// their simulated anomalous versions (diffad-synth), encoded with `codec`:
    /// `z = mu + sigma * n` (a posterior sample of `E(x)`, drawn from our seeded streams) and
    /// `c = E(x_a)` (posterior mode). Otherwise as [`train`](Self::train).
    pub fn train_on_images<I, E>(
        &mut self,
        codec: &dyn LatentCodec,
        batches: I,
        opts: &TrainLoopOptions,
        progress: &mut dyn Progress,
    ) -> Result<TrainSummary>
    where
        I: IntoIterator<Item = std::result::Result<(Tensor, Tensor), E>>,
        E: std::fmt::Display,
    {
        let seed = self.config.seed;
        let device = self.device.clone();
        self.run_loop(batches, opts, progress, move |step, x, x_a| {
            let posterior = codec.encode_posterior(&x)?;
            let mean = posterior.mean.detach();
            let (b, ch, h, w) = mean.dims4()?;
            let mut rngs: Vec<ChaCha8Rng> = (0..b as u64)
                .map(|i| sample_rng(mix_seed(seed, step), POSTERIOR_PURPOSE, i))
                .collect();
            let n = gaussian_per_sample(&mut rngs, &[ch, h, w], mean.dtype(), mean.device())?;
            let z = (mean + posterior.std.detach().mul(&n)?)?;
            let c = codec.encode(&x_a)?.detach();
            Ok((z.to_device(&device)?, c.to_device(&device)?))
        })
    }

    fn run_loop<I, E, F>(
        &mut self,
        batches: I,
        opts: &TrainLoopOptions,
        progress: &mut dyn Progress,
        mut prepare: F,
    ) -> Result<TrainSummary>
    where
        I: IntoIterator<Item = std::result::Result<(Tensor, Tensor), E>>,
        E: std::fmt::Display,
        F: FnMut(u64, Tensor, Tensor) -> Result<(Tensor, Tensor)>,
    {
        progress.start(opts.max_steps.map(|m| self.step + m), self.step);
        let start = Instant::now();
        let (mut steps, mut sum, mut last) = (0u64, 0.0f64, f32::NAN);
        for batch in batches {
            if opts.max_steps.is_some_and(|m| steps >= m) {
                break;
            }
            let (a, b) = batch.map_err(|e| Error::Input(format!("training batch: {e}")))?;
            let (z, c) = prepare(self.step, a, b)?;
            let seed = self.step_seed(self.step);
            last = self.train_step(&z, &c, seed)?;
            steps += 1;
            sum += last as f64;
            progress.step(self.step, f64::from(last));
            if let (Some(path), Some(every)) = (&opts.checkpoint, opts.checkpoint_every) {
                if every > 0 && self.step.is_multiple_of(every) {
                    self.save_checkpoint(path)?;
                    log::debug!(
                        "ldm: checkpoint of step {} written to {}",
                        self.step,
                        path.display()
                    );
                }
            }
        }
        progress.finish();
        if let Some(path) = &opts.checkpoint {
            self.save_checkpoint(path)?;
        }
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        Ok(TrainSummary {
            steps,
            step: self.step,
            mean_loss: if steps == 0 {
                f32::NAN
            } else {
                (sum / steps as f64) as f32
            },
            last_loss: last,
            steps_per_second: steps as f64 / secs,
        })
    }

    /// Writes the weights (`model.<name>`), the EMA (`ema.<name>`), the AdamW moments
    /// (`adam.m.<name>`, `adam.v.<name>`) and the configuration (safetensors metadata) to
    /// `path`, atomically (`path.tmp`, then rename).
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut tensors: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(name, var)| (format!("model.{name}"), var.as_tensor().clone()))
            .collect();
        if let Some(ema) = &self.ema {
            tensors.extend(
                ema.weights()
                    .iter()
                    .map(|(name, t)| (format!("ema.{name}"), t.clone())),
            );
        }
        tensors.extend(
            self.optimizer
                .state_tensors()
                .into_iter()
                .map(|(name, t)| (format!("adam.{name}"), t)),
        );
        let meta = CheckpointMeta {
            format: CHECKPOINT_FORMAT.to_string(),
            step: self.step,
            ema_updates: self.ema.as_ref().map(|e| e.updates()).unwrap_or(0),
            unet: self.unet_config.clone(),
            train: self.config.clone(),
        };
        let json = serde_json::to_string(&meta)
            .map_err(|e| Error::checkpoint(path, format!("serialising metadata: {e}")))?;
        let metadata = HashMap::from([(METADATA_KEY.to_string(), json)]);
        save_tensors(
            path,
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(metadata),
        )
        .map_err(file_error)
    }

    /// Restores a trainer saved by [`LdmTrainer::save_checkpoint`] (weights, EMA, optimiser
    /// moments and step count) on `device`. `config` replaces the saved training settings
    /// when given (e.g. another learning rate); `None` keeps the saved ones. The UNet
    /// architecture is the saved one.
    pub fn resume(
        path: impl AsRef<Path>,
        config: Option<LdmTrainConfig>,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let file = TensorFile::read(path, device).map_err(file_error)?;
        let json = file.meta(METADATA_KEY).map_err(|_| {
            Error::checkpoint(path, "no `diffad` metadata (not an LdmTrainer checkpoint)")
        })?;
        let meta: CheckpointMeta = serde_json::from_str(json)
            .map_err(|e| Error::checkpoint(path, format!("metadata: {e}")))?;
        if meta.format != CHECKPOINT_FORMAT {
            return Err(Error::checkpoint(
                path,
                format!("unknown format {:?}", meta.format),
            ));
        }
        let mut trainer = Self::new(meta.unet, config.unwrap_or(meta.train), device)?;
        load_varmap_from(&trainer.varmap, &file, "model.", true).map_err(file_error)?;
        let get = |key: &str| file.tensors.get(key).cloned();
        trainer
            .optimizer
            .load_state(|k| get(&format!("adam.{k}")), meta.step)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        if let Some(ema) = &mut trainer.ema {
            ema.load(get, "ema.", meta.ema_updates)
                .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        }
        trainer.step = meta.step;
        Ok(trainer)
    }

    /// Writes the network alone (EMA weights if `ema` and available) as a diffusers
    /// `UNet2DModel` state dict, atomically; load it with [`UNet::load`] or
    /// diffusers with [`UNetConfig::to_diffusers_json`] as `config.json`.
    pub fn export_unet(&self, path: impl AsRef<Path>, ema: bool) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = match (&self.ema, ema) {
            (Some(e), true) => e.weights().to_vec(),
            _ => self
                .params
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect(),
        };
        save_tensors(
            path.as_ref(),
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            None,
        )
        .map_err(file_error)
    }
}

impl std::fmt::Debug for LdmTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdmTrainer")
            .field("config", &self.config)
            .field("unet_config", &self.unet_config)
            .field("step", &self.step)
            .field("parameters", &self.params.len())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Denoiser for LdmTrainer {
    /// Predicts with the weights being trained (use [`LdmTrainer::ema_unet`] to sample
    /// with the EMA).
    fn predict(
        &self,
        z_t: &Tensor,
        t: &Tensor,
        condition: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.unet.predict(z_t, t, condition)
    }
}

const CHECKPOINT_FORMAT: &str = "diffad-ldm-trainer/1";

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    format: String,
    step: u64,
    ema_updates: u64,
    unet: UNetConfig,
    train: LdmTrainConfig,
}

const METADATA_KEY: &str = "diffad";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_does_not_clip_gradients_as_compvis() {
        // The released configs (CompVis latent-diffusion) set no gradient clipping.
        assert_eq!(LdmTrainConfig::default().grad_clip, None);
    }
}
