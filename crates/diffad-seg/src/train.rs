//! Training of the discriminative sub-network (paper Sec. 3.4 and 4.1,
//! `docs/reference.md` §4): focal loss, Adam (lr 1e-3), MultiStepLR at 80 % and
//! 90 % of the epochs with gamma 0.2, batches of `(x_a, x_r, x_inter, mask)`.
//!
//! The samples come from a caller-supplied [`ReconstructionSource`], so this
//! crate knows nothing of diffusion: the pipeline implements the trait with
//! its synthesiser, VAE and diffusion model; tests use synthetic images.
//! Progress goes to a [`Progress`] callback; the crate never prints.
//!
//! Random streams, all from [`SegTrainConfig::seed`]: the initial weights
//! (one ChaCha8 stream per parameter name, keyed by `(seed, name)`, see
//! [`DiscriminativeUNet::init`]) and the sample order of epoch `e`
//! (`ChaCha8Rng::seed_from_u64(seed ^ e·γ)`, [`epoch_shuffle_seed`]): the
//! epoch separates the orders. The samples' own randomness is the source's
//! (seeded by `(seed, epoch, index)` in the pipeline, see
//! [`ReconstructionSource`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{shape_err, Error, Result};
use crate::input::SegInput;
use crate::loss::{focal_loss_with, FocalLossConfig};
use crate::unet::{varmap_tensors, DiscriminativeUNet, DiscriminativeUNetConfig};
use diffad_nn::checkpoint::{load_varmap_from, save_tensors, TensorFile};
use diffad_nn::optim::{AdamW, AdamWConfig, MultiStepLr};
use diffad_nn::progress::Progress;

/// The seed of the sample order of epoch `epoch`: `seed ^ epoch·γ` with
/// `γ = 0x9e37_79b9_7f4a_7c15` (2^64 over the golden ratio, odd), which
/// spreads consecutive epochs over all 64 bits so their orders are unrelated
/// (and distinct epochs never share a seed).
pub fn epoch_shuffle_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// One training sample, single images `(C, H, W)` on any device.
#[derive(Debug, Clone)]
pub struct SegSample {
    /// The (synthetically) anomalous input `x_a`.
    pub x_a: Tensor,
    /// Its reconstruction `x_r = D(z_r)`.
    pub x_r: Tensor,
    /// The middle piece: `x_inter = D(z_inter)` for
    /// [`SegInput::Interpolated`], `D(c)` for [`SegInput::VaeReconstruction`],
    /// `None` for [`SegInput::ReconstructionOnly`].
    pub x_inter: Option<Tensor>,
    /// Ground-truth anomaly mask `(1, H, W)` or `(H, W)`, 0 = normal,
    /// 1 = anomalous.
    pub mask: Tensor,
}

/// A batch of [`SegSample`]s stacked along a new leading axis.
#[derive(Debug, Clone)]
pub struct SegBatch {
    /// `(B, C, H, W)`.
    pub x_a: Tensor,
    /// `(B, C, H, W)`.
    pub x_r: Tensor,
    /// `(B, C, H, W)` when the samples have a middle piece.
    pub x_inter: Option<Tensor>,
    /// `(B, 1, H, W)`.
    pub mask: Tensor,
}

impl SegBatch {
    /// Stacks samples, checking they all share the first sample's shapes.
    pub fn stack(samples: &[SegSample]) -> Result<Self> {
        let first = samples.first().ok_or(Error::EmptySource)?;
        let dims = first.x_a.dims().to_vec();
        if dims.len() != 3 {
            return Err(shape_err("SegSample x_a", "(C, H, W)", &dims));
        }
        let (h, w) = (dims[1], dims[2]);
        let mut masks = Vec::with_capacity(samples.len());
        for s in samples {
            if s.x_a.dims() != dims.as_slice() {
                return Err(shape_err(
                    "SegSample x_a",
                    format!("{dims:?}"),
                    s.x_a.dims(),
                ));
            }
            if s.x_r.dims() != dims.as_slice() {
                return Err(shape_err(
                    "SegSample x_r",
                    format!("{dims:?}"),
                    s.x_r.dims(),
                ));
            }
            match (&s.x_inter, &first.x_inter) {
                (Some(m), Some(_)) if m.dims() != dims.as_slice() => {
                    return Err(shape_err(
                        "SegSample x_inter",
                        format!("{dims:?}"),
                        m.dims(),
                    ))
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Err(Error::Config(
                        "SegSample x_inter must be given for all samples of a batch or none".into(),
                    ))
                }
                _ => {}
            }
            let mask = match s.mask.dims() {
                [1, mh, mw] if (*mh, *mw) == (h, w) => s.mask.clone(),
                [mh, mw] if (*mh, *mw) == (h, w) => s.mask.unsqueeze(0)?,
                other => {
                    return Err(shape_err(
                        "SegSample mask",
                        format!("(1, {h}, {w}) or ({h}, {w})"),
                        other,
                    ))
                }
            };
            masks.push(mask);
        }
        let stack = |f: &dyn Fn(&SegSample) -> Tensor| -> Result<Tensor> {
            let v: Vec<Tensor> = samples.iter().map(f).collect();
            Ok(Tensor::stack(&v, 0)?)
        };
        let x_inter = if first.x_inter.is_some() {
            let v: Vec<Tensor> = samples.iter().filter_map(|s| s.x_inter.clone()).collect();
            Some(Tensor::stack(&v, 0)?)
        } else {
            None
        };
        Ok(Self {
            x_a: stack(&|s| s.x_a.clone())?,
            x_r: stack(&|s| s.x_r.clone())?,
            x_inter,
            mask: Tensor::stack(&masks, 0)?,
        })
    }

    /// The segmenter input of this batch for `variant`
    /// (see [`SegInput::assemble`]).
    pub fn input(&self, variant: &SegInput) -> Result<Tensor> {
        variant.assemble(&self.x_r, self.x_inter.as_ref(), &self.x_a)
    }

    /// Moves the batch to `device`.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            x_a: self.x_a.to_device(device)?,
            x_r: self.x_r.to_device(device)?,
            x_inter: match &self.x_inter {
                Some(t) => Some(t.to_device(device)?),
                None => None,
            },
            mask: self.mask.to_device(device)?,
        })
    }
}

/// Where the trainer gets its samples: the pipeline's synthesiser plus
/// reconstruction (or any other producer of `(x_a, x_r, x_inter, mask)`).
///
/// For results that do not depend on the thread count or on resuming,
/// `sample(epoch, index)` should draw its randomness from an RNG seeded by
/// `(seed, epoch, index)`.
pub trait ReconstructionSource {
    /// Number of samples in one epoch.
    fn len(&self) -> usize;

    /// Whether the source has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index` (in `0..len()`) of epoch `epoch`.
    fn sample(&mut self, epoch: usize, index: usize) -> Result<SegSample>;
}

/// Settings of [`SegTrainer`], with DiffAD's values as the default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegTrainConfig {
    /// Number of epochs (DiffAD: 700).
    pub epochs: usize,
    /// Samples per batch (DiffAD: 32).
    pub batch_size: usize,
    /// Adam learning rate (1e-3).
    pub lr: f64,
    /// MultiStepLR milestones as fractions of `epochs` (0.8, 0.9).
    pub lr_milestones: Vec<f64>,
    /// MultiStepLR factor (0.2).
    pub lr_gamma: f64,
    /// Focal loss parameters (gamma 2, no alpha, smooth 1e-5).
    pub focal: FocalLossConfig,
    /// Which channels the segmenter sees (interpolated, lambda 0.5).
    pub input: SegInput,
    /// Seed of the initial weights and of the per-epoch shuffles (see the
    /// module doc).
    pub seed: u64,
    /// Shuffle the sample order every epoch (seeded by `(seed, epoch)`).
    pub shuffle: bool,
    /// Checkpoint file written (atomically) every `checkpoint_every` epochs
    /// and after the last one.
    pub checkpoint: Option<PathBuf>,
    /// Epochs between checkpoints.
    pub checkpoint_every: usize,
}

impl Default for SegTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 700,
            batch_size: 32,
            lr: 1e-3,
            lr_milestones: vec![0.8, 0.9],
            lr_gamma: 0.2,
            focal: FocalLossConfig::default(),
            input: SegInput::default(),
            seed: 0,
            shuffle: true,
            checkpoint: None,
            checkpoint_every: 1,
        }
    }
}

impl SegTrainConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config("batch_size must be positive".into()));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::Config("checkpoint_every must be positive".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!(
                "lr must be positive, got {}",
                self.lr
            )));
        }
        self.input.validate()
    }

    /// The learning-rate schedule these settings describe.
    pub fn schedule(&self) -> MultiStepLr {
        MultiStepLr::from_fractions(self.lr, self.epochs, &self.lr_milestones, self.lr_gamma)
    }
}

/// What [`SegTrainer::train`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Mean focal loss of every epoch trained so far (including epochs
    /// before a resume).
    pub epoch_losses: Vec<f64>,
}

const CHECKPOINT_FORMAT: &str = "diffad-seg-trainer/1";

/// Trains a [`DiscriminativeUNet`] with focal loss and Adam (see the module
/// doc), with atomic checkpoints and resume.
pub struct SegTrainer {
    config: SegTrainConfig,
    unet_config: DiscriminativeUNetConfig,
    model: DiscriminativeUNet,
    varmap: VarMap,
    adam: AdamW,
    epoch: usize,
    epoch_losses: Vec<f64>,
    device: Device,
}

impl std::fmt::Debug for SegTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegTrainer")
            .field("config", &self.config)
            .field("unet_config", &self.unet_config)
            .field("epoch", &self.epoch)
            .field("adam_step", &self.adam.step_count())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Names of the trainable variables (BatchNorm running statistics excluded),
/// sorted.
pub(crate) fn trainable_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("VarMap lock poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

impl SegTrainer {
    /// A trainer with a freshly initialised network (seeded by
    /// `config.seed`). `unet.in_channels` must match `config.input` for the
    /// images the source produces.
    pub fn new(
        unet: DiscriminativeUNetConfig,
        config: SegTrainConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let varmap = VarMap::new();
        let model = DiscriminativeUNet::init(unet, &varmap, config.seed, device)?;
        let adam = AdamW::new(trainable_vars(&varmap)?, AdamWConfig::adam(config.lr))?;
        Ok(Self {
            config,
            unet_config: unet,
            model,
            varmap,
            adam,
            epoch: 0,
            epoch_losses: Vec::new(),
            device: device.clone(),
        })
    }

    /// Resumes from a checkpoint written by [`save_checkpoint`](Self::save_checkpoint):
    /// weights, BatchNorm statistics, Adam moments and step, epoch counter and
    /// loss history. `config` replaces the saved training settings when given
    /// (e.g. more epochs, another checkpoint path); `None` keeps the saved
    /// ones. The architecture is the saved one.
    pub fn resume(
        path: impl AsRef<Path>,
        config: Option<SegTrainConfig>,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let file = TensorFile::read(path, &Device::Cpu)?;
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if file.meta("format")? != CHECKPOINT_FORMAT {
            return Err(bad(format!(
                "not a {CHECKPOINT_FORMAT} checkpoint (format `{}`)",
                file.meta("format")?
            )));
        }
        let unet: DiscriminativeUNetConfig = serde_json::from_str(file.meta("unet_config")?)
            .map_err(|e| bad(format!("bad unet_config: {e}")))?;
        let epoch: usize = file
            .meta("epoch")?
            .parse()
            .map_err(|e| bad(format!("bad epoch: {e}")))?;
        let step: u64 = file
            .meta("adam_step")?
            .parse()
            .map_err(|e| bad(format!("bad adam_step: {e}")))?;
        let epoch_losses: Vec<f64> = serde_json::from_str(file.meta("epoch_losses")?)
            .map_err(|e| bad(format!("bad epoch_losses: {e}")))?;
        let config = match config {
            Some(config) => config,
            None => serde_json::from_str(file.meta("train_config")?)
                .map_err(|e| bad(format!("bad train_config: {e}")))?,
        };
        let mut trainer = Self::new(unet, config, device)?;
        load_varmap_from(&trainer.varmap, &file, "", false)?;
        trainer
            .adam
            .load_state(|key| file.tensors.get(key).cloned(), step)?;
        trainer.epoch = epoch;
        trainer.epoch_losses = epoch_losses;
        Ok(trainer)
    }

    /// Writes weights (DRAEM names), BatchNorm statistics, Adam state, epoch,
    /// loss history and settings to `path` atomically (`path.tmp`, then
    /// rename). The file also loads as plain weights with
    /// [`DiscriminativeUNet::load`].
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut tensors: Vec<(String, Tensor)> =
            varmap_tensors(&self.varmap, "")?.into_iter().collect();
        tensors.extend(self.adam.state_tensors());
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
        meta.insert("unet_config".to_string(), to_json(&self.unet_config)?);
        meta.insert("train_config".to_string(), to_json(&self.config)?);
        meta.insert("epoch_losses".to_string(), to_json(&self.epoch_losses)?);
        meta.insert("epoch".to_string(), self.epoch.to_string());
        meta.insert("adam_step".to_string(), self.adam.step_count().to_string());
        save_tensors(
            path,
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(meta),
        )?;
        Ok(())
    }

    /// The network being trained.
    pub fn model(&self) -> &DiscriminativeUNet {
        &self.model
    }

    /// The variables of the network (for saving or inspection).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The settings.
    pub fn config(&self) -> &SegTrainConfig {
        &self.config
    }

    /// Epochs completed so far.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Optimiser steps taken so far (over the whole run, including those
    /// before a resume).
    pub fn step(&self) -> u64 {
        self.adam.step_count()
    }

    /// The optimiser.
    pub fn optimizer(&self) -> &AdamW {
        &self.adam
    }

    /// One optimisation step on `batch` at the current learning rate;
    /// returns the focal loss before the update. A non-finite loss (e.g. NaN
    /// in the inputs) is an error and leaves the weights untouched.
    pub fn train_step(&mut self, batch: &SegBatch) -> Result<f64> {
        let batch = batch.to_device(&self.device)?;
        let input = batch.input(&self.config.input)?;
        let logits = self.model.forward_t(&input, true)?;
        let loss = focal_loss_with(&logits, &batch.mask, &self.config.focal)?;
        let value = f64::from(loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(Error::NonFinite("focal loss (inputs or weights)"));
        }
        let grads = loss.backward()?;
        self.adam.step(&grads)?;
        Ok(value)
    }

    /// Trains from the current epoch up to `config.epochs`, pulling batches
    /// from `source`, reporting every optimiser step to `progress` (total
    /// `epochs × ⌈len / batch_size⌉` steps), writing checkpoints as
    /// configured.
    pub fn train(
        &mut self,
        source: &mut dyn ReconstructionSource,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        let n = source.len();
        if n == 0 {
            return Err(Error::EmptySource);
        }
        let bs = self.config.batch_size;
        let batches_per_epoch = n.div_ceil(bs);
        let total = (self.config.epochs * batches_per_epoch) as u64;
        progress.start(Some(total), self.step());
        let schedule = self.config.schedule();
        while self.epoch < self.config.epochs {
            let epoch = self.epoch;
            self.adam.set_lr(schedule.lr_at(epoch));
            log::debug!(
                "seg: epoch {}/{} at lr {:.1e}",
                epoch + 1,
                self.config.epochs,
                self.adam.lr()
            );
            let mut order: Vec<usize> = (0..n).collect();
            if self.config.shuffle {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(epoch_shuffle_seed(self.config.seed, epoch));
                order.shuffle(&mut rng);
            }
            let mut sum = 0.0;
            for chunk in order.chunks(bs) {
                let samples = chunk
                    .iter()
                    .map(|&i| source.sample(epoch, i))
                    .collect::<Result<Vec<_>>>()?;
                let batch = SegBatch::stack(&samples)?;
                let loss = self.train_step(&batch)?;
                sum += loss;
                progress.step(self.step(), loss);
            }
            self.epoch_losses.push(sum / batches_per_epoch as f64);
            self.epoch += 1;
            if let Some(path) = &self.config.checkpoint {
                if self.epoch.is_multiple_of(self.config.checkpoint_every)
                    || self.epoch == self.config.epochs
                {
                    let path = path.clone();
                    self.save_checkpoint(&path)?;
                }
            }
        }
        progress.finish();
        Ok(TrainReport {
            epoch_losses: self.epoch_losses.clone(),
        })
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Config(format!("JSON: {e}")))
}
