//! The DiffAD pipeline: run directories, the three training stages and
//! inference.
//!
//! Stages (paper Sec. 3, Fig. 2), each a crate behind a small trait:
//!
//! 1. **VAE** ([`diffad_vae::AutoencoderKl`], a [`diffad_vae::LatentCodec`]):
//!    trained on the good images, or loaded from diffusers `AutoencoderKL`
//!    weights (`vae.pretrained`).
//! 2. **Conditional LDM** ([`diffad_diffusion::UNet`], a
//!    [`diffad_diffusion::Denoiser`]): `z` a posterior sample of `E(x)`,
//!    `c = E(x_a)` of a DRAEM-synthesised anomaly `x_a`
//!    ([`diffad_synth::AnomalySynthesizer`]), trained with the noisy
//!    condition `c_noisy` (Sec. 3.3) or a Table 1 variant.
//! 3. **Segmenter** ([`diffad_seg::DiscriminativeUNet`]): trained with focal
//!    loss on `(x_r, x_inter, x_a)`, where `z_r` comes from DDIM (eta 0) with
//!    the clean condition `c` and `x_inter = D(lambda c + (1 - lambda) z_r)`
//!    (Sec. 3.4).
//!
//! Inference ([`DiffAd::predict`]): `c = E(x)`, `z_r` by DDIM
//! (`inference.ddim_steps`), `x_r = D(z_r)`, `x_inter`, the segmenter's
//! softmax channel 1 as the anomaly map and `max(avg_pool(map, k))` as the
//! image score (REFERENCE section 5).
//!
//! A run directory holds everything of one training run:
//!
//! ```text
//! <run>/config.toml                   the configuration (a run never changes it)
//! <run>/train.log                     one line per stage event
//! <run>/vae/vae.safetensors           final VAE (diffusers names)
//! <run>/vae/checkpoints/step-N/       resumable VAE checkpoints while training
//! <run>/ldm/unet.safetensors          final denoiser (EMA weights, diffusers names)
//! <run>/ldm/checkpoint.safetensors    resumable LDM checkpoint while training
//! <run>/seg/segmenter.safetensors     final segmenter (DRAEM names)
//! <run>/seg/checkpoint.safetensors    resumable segmenter checkpoint while training
//! ```
//!
//! A stage is done when its final file exists; an interrupted stage resumes
//! from its checkpoint. Every file is written atomically.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use diffad_diffusion::{
    reconstruct, BetaSchedule, ConditionMode, Ddim, DdimConfig, LdmTrainConfig, LdmTrainer,
    ReconstructOptions, TrainLoopOptions, UNet, UNetConfig,
};
use diffad_seg::{
    anomaly_map, DiscriminativeUNet, ReconstructionSource, SegInput, SegSample, SegTrainConfig,
    SegTrainer,
};
use diffad_synth::{
    AnomalySynthesizer, FolderOptions, FolderTextures, ImageF32, ProceduralTextures, SynthConfig,
    SyntheticBatch, TextureSource,
};
use diffad_vae::{AutoencoderKl, AutoencoderKlConfig, LatentCodec, VaeTrainConfig, VaeTrainer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, Reconstruction, SegmenterInput};
use crate::data::{images_to_tensor, RgbImage};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::report::AnomalyMap;

/// The file holding a run's configuration.
pub const CONFIG_FILE: &str = "config.toml";

/// A training stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The KL autoencoder.
    Vae,
    /// The conditional latent diffusion model.
    Ldm,
    /// The discriminative segmentation network.
    Segmenter,
}

impl Stage {
    /// All stages in training order.
    pub const ALL: [Stage; 3] = [Stage::Vae, Stage::Ldm, Stage::Segmenter];

    /// Short name (`vae`, `ldm`, `seg`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Vae => "vae",
            Stage::Ldm => "ldm",
            Stage::Segmenter => "seg",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// Salts that give each stage its own random streams from the one seed.
const VAE_SALT: u64 = 0x0076_6165;
const LDM_SALT: u64 = 0x006c_646d;
const SYNTH_SALT: u64 = 0x7379_6e74;
const SEG_SALT: u64 = 0x0073_6567;
const SHUFFLE_SALT: u64 = 0x7368_7566;
const RECON_SALT: u64 = 0x7265_636f;

fn mix(seed: u64, salt: u64) -> u64 {
    diffad_diffusion::noise::mix_seed(seed, salt)
}

/// A run directory (see the module documentation).
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
    config: Config,
}

impl RunDir {
    /// Creates `root` with `config`, or reopens it if it was made with the
    /// same configuration. A different saved configuration is
    /// [`Error::ConfigMismatch`] naming the first differing setting.
    pub fn create(root: &Path, config: Config) -> Result<Self> {
        config.validate(Path::new("<config>"))?;
        let file = root.join(CONFIG_FILE);
        if file.exists() {
            let saved = Config::from_file(&file)?;
            if let Some(field) = saved.first_difference(&config) {
                return Err(Error::ConfigMismatch {
                    run_dir: root.to_path_buf(),
                    field,
                });
            }
        } else {
            crate::io::create_dir_all(root)?;
            write_atomic(&file, config.to_toml_string()?.as_bytes())?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            config,
        })
    }

    /// Opens an existing run directory with its saved configuration.
    pub fn open(root: &Path) -> Result<Self> {
        let file = root.join(CONFIG_FILE);
        if !file.is_file() {
            return Err(Error::Layout {
                path: root.to_path_buf(),
                reason: format!("not a diffad run directory (no {CONFIG_FILE})"),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            config: Config::from_file(&file)?,
        })
    }

    /// The run's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Final weights of a stage.
    pub fn weights(&self, stage: Stage) -> PathBuf {
        match stage {
            Stage::Vae => self.root.join("vae").join("vae.safetensors"),
            Stage::Ldm => self.root.join("ldm").join("unet.safetensors"),
            Stage::Segmenter => self.root.join("seg").join("segmenter.safetensors"),
        }
    }

    /// The resumable checkpoint of a stage (a folder of `step-N` folders for
    /// the VAE, one file otherwise).
    pub fn checkpoint(&self, stage: Stage) -> PathBuf {
        match stage {
            Stage::Vae => self.root.join("vae").join("checkpoints"),
            Stage::Ldm => self.root.join("ldm").join("checkpoint.safetensors"),
            Stage::Segmenter => self.root.join("seg").join("checkpoint.safetensors"),
        }
    }

    /// Whether a stage has finished (its final weights exist).
    pub fn is_done(&self, stage: Stage) -> bool {
        self.weights(stage).is_file()
    }

    /// The training log.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("train.log")
    }

    /// Appends a timestamped line to the training log.
    pub fn log(&self, line: &str) -> Result<()> {
        let path = self.log_path();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(file, "{secs} {line}").map_err(|e| Error::io(&path, e))
    }

    fn require(&self, stage: Stage) -> Result<PathBuf> {
        let path = self.weights(stage);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingCheckpoint {
                path,
                stage: stage.name().into(),
            })
        }
    }
}

impl Config {
    /// The diffusers `AutoencoderKL` architecture of `[vae]`.
    pub fn vae_architecture(&self) -> AutoencoderKlConfig {
        let v = &self.vae;
        AutoencoderKlConfig {
            block_out_channels: v.channel_mult.iter().map(|m| m * v.base_channels).collect(),
            layers_per_block: v.layers_per_block,
            latent_channels: v.latent_channels,
            norm_num_groups: v.norm_groups,
            ..AutoencoderKlConfig::diffad()
        }
    }

    /// The conditioning of `[ldm] reconstruction` as the diffusion crate's mode.
    pub fn condition_mode(&self) -> ConditionMode {
        match self.ldm.reconstruction {
            Reconstruction::NoisyCondition => ConditionMode::Noisy,
            Reconstruction::CleanCondition => ConditionMode::Clean,
            Reconstruction::ForwardReverse => {
                let t = (self.inference.sdedit_strength * self.ldm.timesteps as f64) as usize;
                ConditionMode::ForwardReverse {
                    t_start: t.min(self.ldm.timesteps - 1),
                }
            }
        }
    }

    /// The denoiser architecture of `[ldm]` (latent + condition channels in).
    pub fn unet_architecture(&self) -> UNetConfig {
        let l = &self.ldm;
        let latent = self.vae.latent_channels;
        let config = UNetConfig {
            in_channels: 2 * latent,
            out_channels: latent,
            block_out_channels: l
                .channel_mult
                .iter()
                .map(|m| m * l.model_channels)
                .collect(),
            attention: l.attention_levels.clone(),
            layers_per_block: l.layers_per_block,
            attention_head_dim: l.head_channels,
            norm_num_groups: l.norm_groups,
            ..UNetConfig::diffad()
        };
        if self.condition_mode().is_conditional() {
            config
        } else {
            config.unconditional()
        }
    }

    /// The segmenter's input variant.
    pub fn seg_input(&self) -> SegInput {
        match self.segmenter.input {
            SegmenterInput::Interpolated => SegInput::Interpolated {
                lambda: self.segmenter.lambda,
            },
            SegmenterInput::VaeReconstruction => SegInput::VaeReconstruction,
            SegmenterInput::ReconstructionOnly => SegInput::None,
        }
    }

    /// The segmenter architecture.
    pub fn segmenter_architecture(&self) -> diffad_seg::UNetConfig {
        diffad_seg::UNetConfig::new(
            self.seg_input().in_channels(3),
            self.segmenter.base_channels,
        )
    }

    /// The DDIM sampler (CompVis spacing, eta 0) with `steps` steps.
    pub fn ddim(&self, steps: usize) -> Result<Ddim> {
        Ddim::new(DdimConfig {
            num_train_timesteps: self.ldm.timesteps,
            beta_schedule: self.beta_schedule(),
            num_inference_steps: steps,
            ..DdimConfig::diffad()
        })
        .map_err(|e| Error::Config {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })
    }

    fn beta_schedule(&self) -> BetaSchedule {
        BetaSchedule::ScaledLinear {
            beta_start: self.ldm.beta_start,
            beta_end: self.ldm.beta_end,
        }
    }

    /// DRAEM synthesis settings of `[synthesis]`.
    pub fn synth_config(&self) -> SynthConfig {
        let s = &self.synthesis;
        let mut config = SynthConfig {
            anomaly_probability: s.anomaly_probability as f32,
            beta_max: s.beta_max as f32,
            rotate_normal_probability: s.normal_rotation_probability as f32,
            ..SynthConfig::default()
        };
        config.mask.max_scale_exponent = s.perlin_max_exponent;
        config.mask.threshold = s.threshold as f32;
        config
    }

    fn texture_source(&self) -> Result<Arc<dyn TextureSource>> {
        Ok(match &self.synthesis.texture_dir {
            Some(dir) => {
                let size = self.data.image_size;
                Arc::new(FolderTextures::open(
                    dir,
                    FolderOptions {
                        preload: Some((size, size)),
                        ..FolderOptions::default()
                    },
                )?)
            }
            None => Arc::new(ProceduralTextures::default()),
        })
    }

    fn synthesizer(&self) -> Result<AnomalySynthesizer> {
        Ok(AnomalySynthesizer::new(
            self.synth_config(),
            self.texture_source()?,
            mix(self.seed, SYNTH_SALT),
        )?)
    }
}

/// Wraps a stage crate's error with the stage name.
fn stage_err(stage: Stage) -> impl Fn(&dyn fmt::Display) -> Error {
    move |e| Error::Stage {
        stage: stage.name().into(),
        message: e.to_string(),
    }
}

macro_rules! stage {
    ($stage:expr, $e:expr) => {
        $e.map_err(|e| stage_err($stage)(&e))
    };
}

/// What [`train`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainOptions {
    /// The stages to run (all, in order, by default). A stage whose
    /// predecessor is not done is an error.
    pub stages: Vec<Stage>,
    /// Show progress bars (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            stages: Stage::ALL.to_vec(),
            progress: true,
        }
    }
}

/// What a stage did.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Whether it was already done (nothing run).
    pub skipped: bool,
    /// Optimiser steps run now.
    pub steps: u64,
    /// Loss of the last step (mean of the last epoch for the segmenter).
    pub final_loss: Option<f64>,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl fmt::Display for StageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped {
            return write!(f, "{:<4} already trained", self.stage.name());
        }
        write!(
            f,
            "{:<4} {:>6} steps  {:>7.1} s",
            self.stage.name(),
            self.steps,
            self.seconds
        )?;
        if let Some(l) = self.final_loss {
            write!(f, "  final loss {l:.4}")?;
        }
        Ok(())
    }
}

/// Trains the requested stages of `run` on good `images` (all of the
/// configured `image_size`), resuming interrupted stages.
pub fn train(
    run: &RunDir,
    images: &[RgbImage],
    device: &Device,
    options: &TrainOptions,
) -> Result<Vec<StageReport>> {
    let size = run.config.data.image_size;
    if images.is_empty() {
        return Err(Error::Shape("no training images".into()));
    }
    if let Some(bad) = images
        .iter()
        .find(|i| (i.height(), i.width()) != (size, size))
    {
        return Err(Error::Shape(format!(
            "training images must be {size}x{size} (data.image_size), got {}x{}",
            bad.height(),
            bad.width()
        )));
    }
    let mut stages = options.stages.clone();
    stages.sort();
    stages.dedup();
    let mut reports = Vec::new();
    for stage in stages {
        if run.is_done(stage) {
            reports.push(StageReport {
                stage,
                skipped: true,
                steps: 0,
                final_loss: None,
                seconds: 0.0,
            });
            continue;
        }
        let start = Instant::now();
        run.log(&format!("{stage}: start ({} images)", images.len()))?;
        let (steps, final_loss) = match stage {
            Stage::Vae => train_vae(run, images, device, options.progress)?,
            Stage::Ldm => train_ldm(run, images, device, options.progress)?,
            Stage::Segmenter => train_segmenter(run, images, device, options.progress)?,
        };
        let report = StageReport {
            stage,
            skipped: false,
            steps,
            final_loss,
            seconds: start.elapsed().as_secs_f64(),
        };
        run.log(&format!("{stage}: done: {report}"))?;
        reports.push(report);
    }
    Ok(reports)
}

fn steps_per_epoch(n: usize, batch: usize) -> u64 {
    n.div_ceil(batch) as u64
}

fn load_vae(run: &RunDir, device: &Device) -> Result<AutoencoderKl> {
    let path = run.require(Stage::Vae)?;
    stage!(
        Stage::Vae,
        AutoencoderKl::load(run.config.vae_architecture(), &path, device)
    )
}

fn train_vae(
    run: &RunDir,
    images: &[RgbImage],
    device: &Device,
    progress: bool,
) -> Result<(u64, Option<f64>)> {
    let config = &run.config;
    let arch = config.vae_architecture();
    let out = run.weights(Stage::Vae);
    if let Some(pretrained) = &config.vae.pretrained {
        let vae = stage!(Stage::Vae, AutoencoderKl::load(arch, pretrained, device))?;
        stage!(Stage::Vae, vae.save(&out))?;
        run.log(&format!("vae: loaded {}", pretrained.display()))?;
        return Ok((0, None));
    }
    let v = &config.vae;
    let total = v.epochs as u64 * steps_per_epoch(images.len(), v.batch_size);
    let defaults = VaeTrainConfig::default();
    // The PatchGAN starts at step 50001 (kl.yaml): only build it when reached.
    let discriminator = defaults
        .discriminator
        .clone()
        .filter(|d| d.start_step < total);
    let train_config = VaeTrainConfig {
        steps: total,
        batch_size: v.batch_size,
        optimizer: diffad_vae::AdamWConfig {
            lr: v.learning_rate,
            ..defaults.optimizer
        },
        kl_weight: v.kl_weight,
        discriminator,
        checkpoint_every: (total / 4).max(1),
        checkpoint_dir: Some(run.checkpoint(Stage::Vae)),
        seed: mix(config.seed, VAE_SALT),
        progress,
        ..defaults
    };
    let checkpoints = run.checkpoint(Stage::Vae);
    let mut trainer = match stage!(Stage::Vae, VaeTrainer::latest_checkpoint(&checkpoints))? {
        Some(latest) => {
            run.log(&format!("vae: resuming from {}", latest.display()))?;
            stage!(
                Stage::Vae,
                VaeTrainer::resume(&latest, Some(train_config), device)
            )?
        }
        None => {
            let vae = stage!(
                Stage::Vae,
                AutoencoderKl::new(arch, mix(config.seed, VAE_SALT), device)
            )?;
            stage!(Stage::Vae, VaeTrainer::new(vae, train_config))?
        }
    };
    let data = images_to_tensor(images, &Device::Cpu)?;
    let before = trainer.step();
    let history = stage!(Stage::Vae, trainer.train(&data))?;
    stage!(Stage::Vae, trainer.vae().save(&out))?;
    remove_dir(&checkpoints)?;
    Ok((trainer.step() - before, history.last().map(|s| s.loss)))
}

fn remove_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

fn remove_file(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// The image order of `epoch`: a shuffle seeded by `(seed, epoch)`.
fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(seed, SHUFFLE_SALT), epoch));
    order.shuffle(&mut rng);
    order
}

fn to_synth_images(images: &[RgbImage]) -> Result<Vec<ImageF32>> {
    images
        .iter()
        .map(|i| Ok(ImageF32::from_chw(i.height(), i.width(), i.data())?))
        .collect()
}

/// Synthesises anomalies for `indices` of `normals` with the per-sample
/// streams `(epoch, index)` (independent of batching and threads).
fn synthesize(
    synth: &AnomalySynthesizer,
    normals: &[ImageF32],
    indices: &[usize],
    epoch: u64,
    device: &Device,
) -> Result<SyntheticBatch> {
    use rayon::prelude::*;
    let samples = indices
        .par_iter()
        .map(|&i| synth.synthesize_indexed(&normals[i], None, epoch, i as u64))
        .collect::<diffad_synth::Result<Vec<_>>>()?;
    Ok(SyntheticBatch::from_samples(&samples, device)?)
}

fn train_ldm(
    run: &RunDir,
    images: &[RgbImage],
    device: &Device,
    progress: bool,
) -> Result<(u64, Option<f64>)> {
    let config = &run.config;
    let vae = load_vae(run, device)?;
    let l = &config.ldm;
    let checkpoint = run.checkpoint(Stage::Ldm);
    if let Some(dir) = checkpoint.parent() {
        crate::io::create_dir_all(dir)?;
    }
    let mut trainer = if checkpoint.is_file() {
        run.log(&format!("ldm: resuming from {}", checkpoint.display()))?;
        stage!(Stage::Ldm, LdmTrainer::from_checkpoint(&checkpoint, device))?
    } else {
        let train_config = LdmTrainConfig {
            mode: config.condition_mode(),
            beta_schedule: config.beta_schedule(),
            num_train_timesteps: l.timesteps,
            optimizer: diffad_diffusion::AdamWConfig {
                lr: l.learning_rate,
                ..diffad_diffusion::AdamWConfig::default()
            },
            ema_decay: (l.ema_decay > 0.0).then_some(l.ema_decay),
            seed: mix(config.seed, LDM_SALT),
            progress,
            ..LdmTrainConfig::default()
        };
        stage!(
            Stage::Ldm,
            LdmTrainer::new(config.unet_architecture(), train_config, device)
        )?
    };
    let n = images.len();
    let per_epoch = steps_per_epoch(n, l.batch_size);
    let total = l.epochs as u64 * per_epoch;
    let start = trainer.global_step();
    let synth = config.synthesizer()?;
    let normals = to_synth_images(images)?;
    let seed = config.seed;
    let batch_size = l.batch_size;
    let batch_device = device.clone();
    let batches = (start..total).map(move |step| -> Result<(Tensor, Tensor)> {
        let (epoch, b) = (step / per_epoch, (step % per_epoch) as usize);
        let order = epoch_order(seed, epoch, n);
        let indices = &order[b * batch_size..((b + 1) * batch_size).min(n)];
        let batch = synthesize(&synth, &normals, indices, epoch, &batch_device)?;
        // DRAEM may rotate the normal image; the target is the image the
        // anomaly was pasted on.
        Ok((batch.normal, batch.augmented))
    });
    let summary = stage!(
        Stage::Ldm,
        trainer.train_on_images(
            &vae,
            batches,
            &TrainLoopOptions {
                max_steps: Some(total.saturating_sub(start)),
                checkpoint: Some(checkpoint.clone()),
                checkpoint_every: Some((total / 10).max(1)),
            },
        )
    )?;
    let out = run.weights(Stage::Ldm);
    stage!(Stage::Ldm, trainer.export_unet(&out, true))?;
    remove_file(&checkpoint)?;
    Ok((
        summary.steps,
        summary
            .last_loss
            .is_finite()
            .then_some(f64::from(summary.last_loss)),
    ))
}

/// The reconstruction options of the segmenter's training data and of
/// inference: DDIM eta 0 with the clean condition (or the configured noisy
/// test condition / SDEdit start).
fn reconstruct_options(
    config: &Config,
    steps: usize,
    seed: u64,
    offset: u64,
) -> ReconstructOptions {
    ReconstructOptions {
        steps,
        eta: 0.0,
        mode: config.condition_mode(),
        condition_t: config.inference.condition_noise_step,
        seed,
        sample_offset: offset,
    }
}

/// The frozen VAE and denoiser, producing `(c, z_r, x_r, middle)` for a batch.
struct Reconstructor {
    vae: AutoencoderKl,
    unet: UNet,
    ddim: Ddim,
    input: SegInput,
}

/// A batch's reconstruction.
struct Reconstructed {
    x_r: Tensor,
    middle: Option<Tensor>,
}

impl Reconstructor {
    fn load(run: &RunDir, device: &Device, steps: usize) -> Result<Self> {
        let vae = load_vae(run, device)?;
        let unet_path = run.require(Stage::Ldm)?;
        let unet = stage!(
            Stage::Ldm,
            UNet::from_safetensors(
                run.config.unet_architecture(),
                &unet_path,
                DType::F32,
                device
            )
        )?;
        Ok(Self {
            vae,
            unet,
            ddim: run.config.ddim(steps)?,
            input: run.config.seg_input(),
        })
    }

    fn run(&self, x_a: &Tensor, opts: &ReconstructOptions) -> Result<Reconstructed> {
        let c = self.vae.encode(x_a)?;
        let z_r = stage!(Stage::Ldm, reconstruct(&self.unet, &self.ddim, &c, opts))?;
        self.finish(&c, &z_r)
    }

    /// `x_r = D(z_r)` and the middle piece (`x_inter`, `D(c)` or none).
    fn finish(&self, c: &Tensor, z_r: &Tensor) -> Result<Reconstructed> {
        let x_r = self.vae.decode(z_r)?;
        let decode = |z: &Tensor| self.vae.decode(z);
        let middle = stage!(
            Stage::Segmenter,
            self.input.middle_from_latents(c, z_r, &decode)
        )?;
        Ok(Reconstructed { x_r, middle })
    }
}

/// The segmenter's training data: for each epoch, fresh DRAEM anomalies of
/// every good image and their DDIM reconstructions (computed in batches when
/// the epoch is first asked for).
struct SegSource<'a> {
    config: &'a Config,
    reconstructor: &'a Reconstructor,
    synth: AnomalySynthesizer,
    normals: Vec<ImageF32>,
    device: Device,
    epoch: Option<usize>,
    cache: Vec<SegSample>,
}

impl SegSource<'_> {
    fn fill(&mut self, epoch: usize) -> Result<()> {
        self.cache.clear();
        let n = self.normals.len();
        let indices: Vec<usize> = (0..n).collect();
        let seed = mix(mix(self.config.seed, RECON_SALT), epoch as u64);
        for chunk in indices.chunks(self.config.inference.batch_size) {
            let batch = synthesize(
                &self.synth,
                &self.normals,
                chunk,
                epoch as u64,
                &self.device,
            )?;
            let opts = reconstruct_options(
                self.config,
                self.config.segmenter.reconstruction_ddim_steps,
                seed,
                chunk[0] as u64,
            );
            let rec = self.reconstructor.run(&batch.augmented, &opts)?;
            for j in 0..chunk.len() {
                self.cache.push(SegSample {
                    x_a: batch.augmented.get(j)?,
                    x_r: rec.x_r.get(j)?,
                    x_inter: rec.middle.as_ref().map(|m| m.get(j)).transpose()?,
                    mask: batch.mask.get(j)?,
                });
            }
        }
        self.epoch = Some(epoch);
        Ok(())
    }
}

impl ReconstructionSource for SegSource<'_> {
    fn len(&self) -> usize {
        self.normals.len()
    }

    fn sample(&mut self, epoch: usize, index: usize) -> diffad_seg::Result<SegSample> {
        if self.epoch != Some(epoch) {
            self.fill(epoch)
                .map_err(|e| diffad_seg::Error::Source(e.to_string()))?;
        }
        self.cache.get(index).cloned().ok_or_else(|| {
            diffad_seg::Error::Source(format!("sample {index} of {}", self.cache.len()))
        })
    }
}

fn train_segmenter(
    run: &RunDir,
    images: &[RgbImage],
    device: &Device,
    progress: bool,
) -> Result<(u64, Option<f64>)> {
    let config = &run.config;
    let g = &config.segmenter;
    let reconstructor = Reconstructor::load(run, device, g.reconstruction_ddim_steps)?;
    let checkpoint = run.checkpoint(Stage::Segmenter);
    let train_config = SegTrainConfig {
        epochs: g.epochs,
        batch_size: g.batch_size,
        lr: g.learning_rate,
        lr_milestones: g.lr_milestones.clone(),
        lr_gamma: g.lr_gamma,
        focal: diffad_seg::FocalLossConfig {
            gamma: g.focal_gamma,
            ..diffad_seg::FocalLossConfig::default()
        },
        input: config.seg_input(),
        seed: mix(config.seed, SEG_SALT),
        shuffle: true,
        checkpoint: Some(checkpoint.clone()),
        checkpoint_every: (g.epochs / 10).max(1),
        progress,
    };
    let mut trainer = if checkpoint.is_file() {
        run.log(&format!("seg: resuming from {}", checkpoint.display()))?;
        stage!(
            Stage::Segmenter,
            SegTrainer::resume(&checkpoint, train_config, device)
        )?
    } else {
        if let Some(dir) = checkpoint.parent() {
            crate::io::create_dir_all(dir)?;
        }
        stage!(
            Stage::Segmenter,
            SegTrainer::new(config.segmenter_architecture(), train_config, device)
        )?
    };
    let steps_before = trainer.optimizer().step_count();
    let mut source = SegSource {
        config,
        reconstructor: &reconstructor,
        synth: config.synthesizer()?,
        normals: to_synth_images(images)?,
        device: device.clone(),
        epoch: None,
        cache: Vec::new(),
    };
    let report = stage!(Stage::Segmenter, trainer.train(&mut source))?;
    stage!(
        Stage::Segmenter,
        DiscriminativeUNet::save(trainer.varmap(), &run.weights(Stage::Segmenter))
    )?;
    remove_file(&checkpoint)?;
    Ok((
        trainer.optimizer().step_count() - steps_before,
        report.epoch_losses.last().copied(),
    ))
}

/// One prediction: the anomaly map and the image score.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Per-pixel probability of "anomalous", `image_size x image_size`.
    pub map: AnomalyMap,
    /// `max(avg_pool(map, inference.score_kernel))`.
    pub score: f32,
}

/// A trained DiffAD model, ready for inference.
pub struct DiffAd {
    config: Config,
    device: Device,
    reconstructor: Reconstructor,
    segmenter: DiscriminativeUNet,
    _segmenter_vars: VarMap,
}

impl fmt::Debug for DiffAd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiffAd")
            .field("image_size", &self.config.data.image_size)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl DiffAd {
    /// Loads the final weights of every stage of a run.
    pub fn load(run: &RunDir, device: &Device) -> Result<Self> {
        let reconstructor = Reconstructor::load(run, device, run.config.inference.ddim_steps)?;
        let seg_path = run.require(Stage::Segmenter)?;
        let (segmenter, vars) = stage!(
            Stage::Segmenter,
            DiscriminativeUNet::load(run.config.segmenter_architecture(), &seg_path, device)
        )?;
        Ok(Self {
            config: run.config.clone(),
            device: device.clone(),
            reconstructor,
            segmenter,
            _segmenter_vars: vars,
        })
    }

    /// The configuration of the run it was trained in.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Anomaly map and image score of one image (`image_size` square, RGB in
    /// `[0, 1]`; load it with [`crate::data::load_image`]).
    pub fn predict(&self, image: &RgbImage) -> Result<(AnomalyMap, f32)> {
        let mut out = self.predict_batch(std::slice::from_ref(image))?;
        let p = out
            .pop()
            .ok_or_else(|| Error::Shape("empty prediction".into()))?;
        Ok((p.map, p.score))
    }

    /// Predictions for several images, `inference.batch_size` at a time. The
    /// reverse process draws its noise per image from the seed, so a result
    /// does not depend on the batch it was computed in.
    pub fn predict_batch(&self, images: &[RgbImage]) -> Result<Vec<Prediction>> {
        let size = self.config.data.image_size;
        if let Some(bad) = images
            .iter()
            .find(|i| (i.height(), i.width()) != (size, size))
        {
            return Err(Error::Shape(format!(
                "the model takes {size}x{size} images, got {}x{}",
                bad.height(),
                bad.width()
            )));
        }
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.config.inference.batch_size) {
            let x = images_to_tensor(chunk, &self.device)?;
            let maps = self.anomaly_maps(&x)?;
            let values = maps.flatten_all()?.to_vec1::<f32>()?;
            for v in values.chunks_exact(size * size) {
                let map = AnomalyMap::new(size, size, v.to_vec())?;
                let score = diffad_metrics::image_score(
                    map.data(),
                    size,
                    size,
                    self.config.inference.score_kernel,
                )?;
                out.push(Prediction { map, score });
            }
        }
        Ok(out)
    }

    /// Anomaly maps `(B, 1, H, W)` of a batch `(B, 3, H, W)` in `[0, 1]`.
    ///
    /// The reverse process of every image starts from the same seeded noise
    /// (stream 0), so an image's map does not depend on the batch it is in;
    /// the VAE and the segmenter run on the whole batch.
    pub fn anomaly_maps(&self, x: &Tensor) -> Result<Tensor> {
        let opts = reconstruct_options(
            &self.config,
            self.config.inference.ddim_steps,
            mix(self.config.seed, RECON_SALT),
            0,
        );
        let b = x.dims4()?.0;
        let c = self.reconstructor.vae.encode(x)?;
        let z_r = (0..b)
            .map(|i| {
                stage!(
                    Stage::Ldm,
                    reconstruct(
                        &self.reconstructor.unet,
                        &self.reconstructor.ddim,
                        &c.narrow(0, i, 1)?,
                        &opts
                    )
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let z_r = Tensor::cat(&z_r, 0)?;
        let rec = self.reconstructor.finish(&c, &z_r)?;
        let input = stage!(
            Stage::Segmenter,
            self.reconstructor
                .input
                .assemble(&rec.x_r, rec.middle.as_ref(), x)
        )?;
        let logits = stage!(Stage::Segmenter, self.segmenter.forward_t(&input, false))?;
        stage!(Stage::Segmenter, anomaly_map(&logits))
    }
}
