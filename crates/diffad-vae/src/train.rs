//! Training the autoencoder (LDM's `AutoencoderKL` + `LPIPSWithDiscriminator` recipe).
//!
//! Per step, on a batch `x` in `[−1, 1]` with posterior `q(z|x)`, `z = μ + σ ε`,
//! `x̂ = D(z)`:
//!
//! ```text
//! L_rec  = mean_b Σ_pix [ |x − x̂| (or (x − x̂)²) + w_ssim (1 − SSIM(x, x̂)) + w_p P(x, x̂) ]
//! L_vae  = L_rec + kl_weight · mean_b KL(q ‖ N(0, I)) + λ_adv · 1[t ≥ t_disc] · (−mean D(x̂))
//! λ_adv  = w_disc · clamp(‖∇_W L_rec‖ / (‖∇_W L_adv‖ + 1e-4), 0, 1e4),  W = decoder.conv_out.weight
//! L_disc = 1[t ≥ t_disc] · ½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))
//! ```
//!
//! which is LDM's loss with LPIPS replaced by the pluggable perceptual term `P` (none by
//! default: LPIPS's pretrained VGG weights cannot be shipped) plus an SSIM term, and
//! without LDM's learned output log-variance. The gradients of `L_rec + KL` and of the
//! adversarial term come from two backward passes and are combined with the detached
//! `λ_adv`, exactly as `torch.autograd.grad` + `detach()` do in the reference.
//!
//! Optimisation: [`AdamW`] (LDM: Adam with betas (0.5, 0.9)), optional global-norm
//! gradient clipping, linear learning-rate warm-up. The discriminator has its own AdamW
//! and is trained only from `t_disc` on.
//!
//! Reproducibility: every random stream is a ChaCha8 stream drawn on the CPU from
//! [`VaeTrainConfig::seed`], so a run resumed from a checkpoint continues exactly as an
//! uninterrupted one (dropout, when enabled, is the exception: its stream restarts on
//! resume). The streams, and what separates them:
//!
//! | stream | ChaCha8 seed | stream index |
//! |---|---|---|
//! | batch order (a permutation per epoch) | `seed` | the epoch |
//! | posterior noise `ε` of step `t` | `seed ^` [`POSTERIOR_NOISE_SALT`] | `t` |
//! | the discriminator's initial weights | `seed ^` [`DISCRIMINATOR_SALT`] (per parameter name, [`diffad_nn::init`]) | — |
//!
//! The autoencoder's own initial weights come from the seed given to
//! [`AutoencoderKl::new`](crate::AutoencoderKl::new) (on resume: `seed`, then overwritten
//! by the checkpoint).
//!
//! Checkpoints are directories holding `vae.safetensors`, `optimizer.safetensors` (AdamW
//! moments), the discriminator's two files when it exists, and `state.json` (step, seed,
//! configs). [`VaeTrainer::train`] writes one every `checkpoint_every` steps, and at the
//! end, to [`VaeTrainer::checkpoint_path`]`(checkpoint_dir, step)` (`step-00000100/`);
//! each is written as `….tmp/` and renamed, so a crash never leaves a partial checkpoint
//! under a real name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::AutoencoderKlConfig;
use crate::discriminator::{PatchGan, PatchGanConfig};
use crate::error::{Error, Result};
use crate::loss::{self, PerceptualLoss, Reconstruction};
use crate::model::{check_finite, AutoencoderKl};
use diffad_nn::checkpoint::{self, load_json, save_json, TensorFile};
use diffad_nn::latent::standard_normal;
use diffad_nn::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};
use diffad_nn::progress::Progress;

/// XORed into [`VaeTrainConfig::seed`] to seed the posterior noise `ε` (one ChaCha8
/// stream per step, stream index = step), so it is not the batch-order stream
/// (`seed` itself). The bytes spell `"noise"`.
pub const POSTERIOR_NOISE_SALT: u64 = 0x006e_6f69_7365;

/// XORed into [`VaeTrainConfig::seed`] to seed the discriminator's initial weights, so
/// they are not drawn from the stream of the batch order. `0xd15c` reads "disc".
pub const DISCRIMINATOR_SALT: u64 = 0xd15c;

/// A set of training images, each `(3, H, W)` with values in `[0, 1]`, all the same size.
pub trait TrainingImages {
    /// Number of images.
    fn len(&self) -> usize;

    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `index` as `(3, H, W)` in `[0, 1]` (any device; the trainer moves it).
    fn image(&self, index: usize) -> Result<Tensor>;
}

/// A `(N, 3, H, W)` tensor of images in `[0, 1]`.
impl TrainingImages for Tensor {
    fn len(&self) -> usize {
        self.dims().first().copied().unwrap_or(0)
    }

    fn image(&self, index: usize) -> Result<Tensor> {
        Ok(self.get(index)?)
    }
}

/// The adversarial part of the loss (LDM's `disc_*` options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscriminatorTrainConfig {
    /// The PatchGAN architecture.
    pub patch_gan: PatchGanConfig,
    /// First step (0-based, completed steps) at which the adversarial terms are on
    /// (LDM's `disc_start`, 50001 in the paper's `kl.yaml`).
    pub start_step: u64,
    /// `w_disc` (LDM's `disc_weight`, 0.5).
    pub weight: f64,
    /// The discriminator's optimiser (LDM: the autoencoder's settings).
    pub optimizer: AdamWConfig,
}

impl Default for DiscriminatorTrainConfig {
    /// The paper's settings: PatchGAN (ndf 64, 3 layers), on from step 50001, weight 0.5.
    fn default() -> Self {
        Self {
            patch_gan: PatchGanConfig::default(),
            start_step: 50_001,
            weight: 0.5,
            optimizer: ldm_autoencoder_adam(),
        }
    }
}

/// LDM's autoencoder optimiser: `Adam(lr = 4.5e-6 · 16, betas = (0.5, 0.9))` with no
/// weight decay; the paper's effective rate is 7.2e-5 (`docs/reference.md` §2).
pub fn ldm_autoencoder_adam() -> AdamWConfig {
    AdamWConfig {
        lr: 7.2e-5,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

/// Settings of a [`VaeTrainer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeTrainConfig {
    /// Total optimisation steps; [`VaeTrainer::train`] runs until the step count reaches it.
    pub steps: u64,
    /// Images per step (paper: 8, with 2 accumulated batches on 2 GPUs).
    pub batch_size: usize,
    /// The autoencoder's optimiser.
    pub optimizer: AdamWConfig,
    /// Linear warm-up of the learning rate over this many steps (0: none, as LDM).
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this value (`None`: no clipping, as LDM).
    pub max_grad_norm: Option<f64>,
    /// Pixel distance of the reconstruction term (LDM: L1).
    pub reconstruction: Reconstruction,
    /// Weight of the per-pixel SSIM term `1 − SSIM` (0 switches it off).
    pub ssim_weight: f64,
    /// Weight of the perceptual term, used when a [`PerceptualLoss`] is supplied (LDM: 1).
    pub perceptual_weight: f64,
    /// Weight of the KL term (paper: 1e-6).
    pub kl_weight: f64,
    /// The PatchGAN part, if any.
    pub discriminator: Option<DiscriminatorTrainConfig>,
    /// Write a checkpoint every this many steps (and at the end) when `checkpoint_dir` is set.
    pub checkpoint_every: u64,
    /// Where checkpoints go (`None`: no checkpoints).
    pub checkpoint_dir: Option<PathBuf>,
    /// Seed of the batch order, the posterior noise and the discriminator's initial
    /// weights (see the module doc for how the streams are separated).
    pub seed: u64,
}

impl Default for VaeTrainConfig {
    /// The paper's recipe where it applies (`docs/reference.md` §2): lr 7.2e-5, batch 8, L1,
    /// KL weight 1e-6, PatchGAN from step 50001 with weight 0.5; SSIM weight 1 stands in
    /// for LPIPS.
    fn default() -> Self {
        Self {
            steps: 100_000,
            batch_size: 8,
            optimizer: ldm_autoencoder_adam(),
            warmup_steps: 0,
            max_grad_norm: None,
            reconstruction: Reconstruction::L1,
            ssim_weight: 1.0,
            perceptual_weight: 1.0,
            kl_weight: 1e-6,
            discriminator: Some(DiscriminatorTrainConfig::default()),
            checkpoint_every: 5_000,
            checkpoint_dir: None,
            seed: 0,
        }
    }
}

impl VaeTrainConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config("batch_size must be positive".into()));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::Config("checkpoint_every must be positive".into()));
        }
        for (name, w) in [
            ("ssim_weight", self.ssim_weight),
            ("perceptual_weight", self.perceptual_weight),
            ("kl_weight", self.kl_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Config(format!(
                    "{name} = {w} must be finite and >= 0"
                )));
            }
        }
        if let Some(max) = self.max_grad_norm {
            if !(max.is_finite() && max > 0.0) {
                return Err(Error::Config(format!(
                    "max_grad_norm = {max} must be positive"
                )));
            }
        }
        Ok(())
    }
}

/// The loss terms of one step (batch means; see the module doc).
#[derive(Debug, Clone)]
pub struct LossTerms {
    /// `L_rec` (pixel + SSIM + perceptual), differentiable.
    pub reconstruction: Tensor,
    /// `mean_b KL`, differentiable.
    pub kl: Tensor,
    /// `L_rec + kl_weight · KL`, differentiable.
    pub total: Tensor,
    /// The reconstruction `x̂` in `[−1, 1]`.
    pub reconstruction_image: Tensor,
}

/// What one training step measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Steps completed after this one.
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// The autoencoder's total loss `L_vae`.
    pub loss: f64,
    /// `L_rec`.
    pub reconstruction: f64,
    /// `mean_b KL` (unweighted).
    pub kl: f64,
    /// `−mean D(x̂)` when the discriminator is on.
    pub generator: Option<f64>,
    /// `λ_adv` when the discriminator is on.
    pub adversarial_weight: Option<f64>,
    /// `L_disc` when the discriminator is on.
    pub discriminator: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// What a checkpoint's `state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    step: u64,
    /// Steps taken by the autoencoder's optimiser (its bias correction `t`).
    optimizer_step: u64,
    /// Steps taken by the discriminator's optimiser (it starts late).
    discriminator_optimizer_step: u64,
    vae: AutoencoderKlConfig,
    train: VaeTrainConfig,
}

/// Sorted `(name, var)` of a var map without BatchNorm buffers.
fn trainable(varmap: &candle_nn::VarMap) -> Result<Vec<(String, Var)>> {
    Ok(diffad_nn::testing::named_vars(varmap)?
        .into_iter()
        .filter(|(n, _)| !diffad_nn::testing::is_buffer(n))
        .collect())
}

/// Trains an [`AutoencoderKl`] (see the module doc).
pub struct VaeTrainer {
    vae: AutoencoderKl,
    optimizer: AdamW,
    discriminator: Option<(PatchGan, AdamW, DiscriminatorTrainConfig)>,
    perceptual: Option<Box<dyn PerceptualLoss>>,
    config: VaeTrainConfig,
    step: u64,
    epoch_order: Option<(u64, Vec<usize>)>,
}

impl std::fmt::Debug for VaeTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaeTrainer")
            .field("step", &self.step)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl VaeTrainer {
    /// A trainer for `vae` at step 0 (fresh optimiser, fresh discriminator seeded from
    /// `config.seed`).
    pub fn new(vae: AutoencoderKl, config: VaeTrainConfig) -> Result<Self> {
        config.validate()?;
        let optimizer = AdamW::new(trainable(vae.varmap())?, config.optimizer)?;
        let discriminator = match &config.discriminator {
            Some(d) => {
                let gan =
                    PatchGan::new(d.patch_gan, config.seed ^ DISCRIMINATOR_SALT, vae.device())?;
                let opt = AdamW::new(trainable(gan.varmap())?, d.optimizer)?;
                Some((gan, opt, d.clone()))
            }
            None => None,
        };
        Ok(Self {
            vae,
            optimizer,
            discriminator,
            perceptual: None,
            config,
            step: 0,
            epoch_order: None,
        })
    }

    /// Adds a perceptual term (weighted by `perceptual_weight`), e.g. your own LPIPS.
    pub fn with_perceptual(mut self, perceptual: Box<dyn PerceptualLoss>) -> Self {
        self.perceptual = Some(perceptual);
        self
    }

    /// The model being trained.
    pub fn vae(&self) -> &AutoencoderKl {
        &self.vae
    }

    /// The discriminator, if the config has one.
    pub fn discriminator(&self) -> Option<&PatchGan> {
        self.discriminator.as_ref().map(|(d, _, _)| d)
    }

    /// The autoencoder's optimiser.
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// Optimiser steps taken so far (over the whole run, including those before a resume).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The settings.
    pub fn config(&self) -> &VaeTrainConfig {
        &self.config
    }

    /// The learning rate of step `step` (0-based): `lr · min(1, (step + 1) / warmup)`.
    pub fn learning_rate(&self, step: u64) -> f64 {
        self.config.optimizer.lr * self.warmup_factor(step)
    }

    /// `min(1, (step + 1) / warmup)`, applied to both optimisers' rates.
    fn warmup_factor(&self, step: u64) -> f64 {
        if self.config.warmup_steps == 0 {
            1.0
        } else {
            ((step + 1) as f64 / self.config.warmup_steps as f64).min(1.0)
        }
    }

    /// `L_rec`, KL and `L_rec + kl_weight·KL` for a batch `x` in `[−1, 1]` with posterior
    /// noise `noise` (`None`: use the mean, i.e. no sampling). Differentiable.
    pub fn losses(&self, x: &Tensor, noise: Option<&Tensor>, train: bool) -> Result<LossTerms> {
        let posterior = self.vae.encode_raw_t(x, train)?;
        let z = match noise {
            Some(eps) => posterior.sample(eps)?,
            None => posterior.mean.clone(),
        };
        let x_hat = self.vae.decode_raw_t(&z, train)?;
        let c = &self.config;
        let mut per_image = loss::reconstruction_loss(x, &x_hat, c.reconstruction)?;
        if c.ssim_weight > 0.0 {
            // x and x̂ live in [−1, 1]: data range 2.
            let ssim = loss::ssim_loss(x, &x_hat, 2.0)?;
            per_image = (per_image + (ssim * c.ssim_weight)?)?;
        }
        if let Some(p) = &self.perceptual {
            let pixels = x.dims()[1..].iter().product::<usize>() as f64;
            let d = p.distance(x, &x_hat)?;
            per_image = (per_image + (d * (c.perceptual_weight * pixels))?)?;
        }
        let reconstruction = per_image.mean_all()?;
        let kl = posterior.kl()?.mean_all()?;
        let total = (&reconstruction + (&kl * c.kl_weight)?)?;
        Ok(LossTerms {
            reconstruction,
            kl,
            total,
            reconstruction_image: x_hat,
        })
    }

    /// The images of step `step`: positions `step·B .. (step+1)·B` of the sequence of
    /// per-epoch permutations seeded by `(seed, epoch)`.
    fn batch_indices(&mut self, n: usize, step: u64) -> Vec<usize> {
        let b = self.config.batch_size as u64;
        (0..b)
            .map(|k| {
                let position = step * b + k;
                let epoch = position / n as u64;
                let order = match &self.epoch_order {
                    Some((e, order)) if *e == epoch => order,
                    _ => {
                        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
                        rng.set_stream(epoch);
                        let mut order: Vec<usize> = (0..n).collect();
                        order.shuffle(&mut rng);
                        &self.epoch_order.insert((epoch, order)).1
                    }
                };
                order[(position % n as u64) as usize]
            })
            .collect()
    }

    fn load_batch(&mut self, data: &dyn TrainingImages) -> Result<Tensor> {
        let n = data.len();
        if n == 0 {
            return Err(Error::Data("no training images".into()));
        }
        let indices = self.batch_indices(n, self.step);
        let f = self.vae.config().downsample_factor();
        let channels = self.vae.config().in_channels;
        let mut images = Vec::with_capacity(indices.len());
        for &i in &indices {
            let img = data.image(i)?;
            match *img.dims() {
                [c, h, w] if c == channels && h % f == 0 && w % f == 0 && h > 0 && w > 0 => {}
                _ => {
                    return Err(Error::Data(format!(
                        "image {i} has shape {:?}; expected ({channels}, H, W) with H, W multiples of {f}",
                        img.dims()
                    )))
                }
            }
            if let Some(first) = images.first() {
                let first: &Tensor = first;
                if first.dims() != img.dims() {
                    return Err(Error::Data(format!(
                        "image {i} has shape {:?}, others {:?}",
                        img.dims(),
                        first.dims()
                    )));
                }
            }
            images.push(img.to_dtype(DType::F32)?.to_device(self.vae.device())?);
        }
        let batch = Tensor::stack(&images, 0)?;
        check_finite("training batch", &batch).map_err(|_| {
            Error::Data(format!(
                "a batch of images {indices:?} has NaN or infinite values"
            ))
        })?;
        Ok(batch)
    }

    /// One optimisation step on a batch of images `(B, 3, H, W)` in `[0, 1]`.
    pub fn train_step(&mut self, images: &Tensor) -> Result<StepStats> {
        let step = self.step;
        let x = images.to_device(self.vae.device())?.affine(2.0, -1.0)?;
        let mut noise_rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ POSTERIOR_NOISE_SALT);
        noise_rng.set_stream(step);
        let latent_shape = {
            let (b, _, h, w) = x.dims4()?;
            let f = self.vae.config().downsample_factor();
            [b, self.vae.config().latent_channels, h / f, w / f]
        };
        let noise = standard_normal(&latent_shape, &mut noise_rng, self.vae.device())?;
        let terms = self.losses(&x, Some(&noise), true)?;
        let rec = terms
            .reconstruction
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        let kl = terms.kl.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let mut loss_value = terms.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(Error::NonFinite { what: "loss", step });
        }
        let mut grads = terms.total.backward()?;

        let mut generator = None;
        let mut adversarial_weight = None;
        let mut discriminator = None;
        let warmup = self.warmup_factor(step);
        let max_grad_norm = self.config.max_grad_norm;
        let active = self
            .discriminator
            .as_ref()
            .is_some_and(|(_, _, d)| step >= d.start_step);
        if active {
            if let Some((gan, gan_opt, dcfg)) = &mut self.discriminator {
                let x_hat = &terms.reconstruction_image;
                let g_loss = loss::generator_loss(&gan.forward_t(x_hat, true)?)?;
                let g_grads = g_loss.backward()?;
                let last = self.vae.decoder().conv_out().weight();
                let norm_of = |g: Option<&Tensor>| -> Result<f64> {
                    match g {
                        Some(g) => Ok(g
                            .sqr()?
                            .sum_all()?
                            .to_dtype(DType::F64)?
                            .to_scalar::<f64>()?
                            .sqrt()),
                        None => Ok(0.0),
                    }
                };
                let rec_norm = norm_of(grads.get(last))?;
                let adv_norm = norm_of(g_grads.get(last))?;
                let lambda = (rec_norm / (adv_norm + 1e-4)).clamp(0.0, 1e4) * dcfg.weight;
                for (_, var) in self.optimizer.params() {
                    if let Some(ga) = g_grads.get(var.as_tensor()) {
                        let ga = (ga * lambda)?;
                        let sum = match grads.get(var.as_tensor()) {
                            Some(g) => (g + ga)?,
                            None => ga,
                        };
                        grads.insert(var.as_tensor(), sum);
                    }
                }
                let g_value = g_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                loss_value += lambda * g_value;
                generator = Some(g_value);
                adversarial_weight = Some(lambda);

                // Discriminator step on detached images.
                let logits_real = gan.forward_t(&x.detach(), true)?;
                let logits_fake = gan.forward_t(&x_hat.detach(), true)?;
                let d_loss = loss::hinge_d_loss(&logits_real, &logits_fake)?;
                let d_value = d_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !d_value.is_finite() {
                    return Err(Error::NonFinite {
                        what: "discriminator loss",
                        step,
                    });
                }
                let mut d_grads = d_loss.backward()?;
                if let Some(max) = max_grad_norm {
                    clip_grad_norm(gan_opt.params(), &mut d_grads, max)?;
                }
                gan_opt.set_lr(dcfg.optimizer.lr * warmup);
                gan_opt.step(&d_grads)?;
                discriminator = Some(d_value);
            }
        }

        let norm = grad_norm(self.optimizer.params(), &grads)?;
        if !norm.is_finite() {
            return Err(Error::NonFinite {
                what: "gradient norm",
                step,
            });
        }
        if let Some(max) = self.config.max_grad_norm {
            clip_grad_norm(self.optimizer.params(), &mut grads, max)?;
        }
        let lr = self.learning_rate(step);
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            lr,
            loss: loss_value,
            reconstruction: rec,
            kl,
            generator,
            adversarial_weight,
            discriminator,
            grad_norm: norm,
        })
    }

    /// Trains until [`step`](Self::step) reaches `config.steps`, reporting every step to
    /// `progress` (total `config.steps`), writing checkpoints every `checkpoint_every`
    /// steps and at the end (when `checkpoint_dir` is set; see the module doc). Returns the
    /// statistics of every step run.
    pub fn train(
        &mut self,
        data: &dyn TrainingImages,
        progress: &mut dyn Progress,
    ) -> Result<Vec<StepStats>> {
        if data.is_empty() {
            return Err(Error::Data("no training images".into()));
        }
        let remaining = self.config.steps.saturating_sub(self.step);
        progress.start(Some(self.config.steps), self.step);
        let mut history = Vec::with_capacity(remaining as usize);
        while self.step < self.config.steps {
            let batch = self.load_batch(data)?;
            let stats = self.train_step(&batch)?;
            progress.step(self.step, stats.loss);
            history.push(stats);
            let at_end = self.step == self.config.steps;
            if let Some(dir) = &self.config.checkpoint_dir {
                if self.step.is_multiple_of(self.config.checkpoint_every) || at_end {
                    let path = Self::checkpoint_path(dir, self.step);
                    self.save_checkpoint(&path)?;
                    log::debug!(
                        "vae: checkpoint of step {} written to {}",
                        self.step,
                        path.display()
                    );
                }
            }
        }
        progress.finish();
        Ok(history)
    }

    /// The directory name of the checkpoint of step `step` under `dir`.
    pub fn checkpoint_path(dir: &Path, step: u64) -> PathBuf {
        dir.join(format!("step-{step:08}"))
    }

    /// Writes a checkpoint of the current state to the directory `path` (atomically:
    /// `path.tmp/`, then renamed; see the module doc), replacing any checkpoint there.
    /// [`resume`](Self::resume) reads it back.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let target = path.as_ref();
        let tmp = checkpoint::tmp_path(target);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        self.vae.save(tmp.join("vae.safetensors"))?;
        let state = self.optimizer.state_tensors();
        checkpoint::save_tensors(
            &tmp.join("optimizer.safetensors"),
            state.iter().map(|(n, t)| (n.as_str(), t)),
            None,
        )?;
        if let Some((gan, opt, _)) = &self.discriminator {
            checkpoint::save_varmap(gan.varmap(), &tmp.join("discriminator.safetensors"))?;
            let state = opt.state_tensors();
            checkpoint::save_tensors(
                &tmp.join("discriminator_optimizer.safetensors"),
                state.iter().map(|(n, t)| (n.as_str(), t)),
                None,
            )?;
        }
        let state = TrainState {
            step: self.step,
            optimizer_step: self.optimizer.step_count(),
            discriminator_optimizer_step: self
                .discriminator
                .as_ref()
                .map_or(0, |(_, opt, _)| opt.step_count()),
            vae: self.vae.config().clone(),
            train: self.config.clone(),
        };
        save_json(&state, &tmp.join("state.json"))?;
        if target.exists() {
            std::fs::remove_dir_all(target).map_err(|e| Error::io(target, e))?;
        }
        std::fs::rename(&tmp, target).map_err(|e| Error::io(target, e))?;
        Ok(())
    }

    /// The newest complete checkpoint (`step-N` directory) under `dir`, if any.
    pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut best: Option<(u64, PathBuf)> = None;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let Some(step) = name
                .to_str()
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(s, _)| step > *s) {
                best = Some((step, entry.path()));
            }
        }
        Ok(best.map(|(_, p)| p))
    }

    /// Resumes from a checkpoint directory written by
    /// [`save_checkpoint`](Self::save_checkpoint): weights, optimiser moments and step
    /// count of the autoencoder (and discriminator). `config` replaces the saved training
    /// settings when given (e.g. more `steps`); `None` keeps the saved ones. The
    /// architecture is the saved one.
    pub fn resume(
        path: impl AsRef<Path>,
        config: Option<VaeTrainConfig>,
        device: &Device,
    ) -> Result<Self> {
        let checkpoint_dir = path.as_ref();
        let state: TrainState = load_json(&checkpoint_dir.join("state.json"))?;
        let config = config.unwrap_or(state.train);
        let vae = AutoencoderKl::new(state.vae, config.seed, device)?;
        vae.load_weights(checkpoint_dir.join("vae.safetensors"))?;
        let mut trainer = Self::new(vae, config)?;
        let read = |name: &str| -> Result<BTreeMap<String, Tensor>> {
            Ok(TensorFile::read(&checkpoint_dir.join(name), device)?.tensors)
        };
        let moments = read("optimizer.safetensors")?;
        trainer
            .optimizer
            .load_state(|k| moments.get(k).cloned(), state.optimizer_step)?;
        if let Some((gan, opt, _)) = &mut trainer.discriminator {
            let path = checkpoint_dir.join("discriminator.safetensors");
            if path.exists() {
                checkpoint::load_varmap(gan.varmap(), &path)?;
                let moments = read("discriminator_optimizer.safetensors")?;
                opt.load_state(
                    |k| moments.get(k).cloned(),
                    state.discriminator_optimizer_step,
                )?;
            }
        }
        trainer.step = state.step;
        Ok(trainer)
    }
}
