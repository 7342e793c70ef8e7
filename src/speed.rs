//! Sampling speed of a configuration on a device, in a precision: the four
//! figures `scripts/gpu-check.sh` compares with PyTorch/diffusers on the same
//! machine (`scripts/torch_speed.py` measures the same work; see `docs/gpu.md`).
//!
//! | [`Measurement::name`] | batch | what runs |
//! |---|---|---|
//! | [`UNET_FORWARD`] | 1 and 8 | one denoiser call `eps_theta(z_t, t, c)` on latents of `latent_size` with the condition concatenated ([`Denoiser::predict`]) |
//! | [`DDIM_RECONSTRUCTION`] | 8 | the reverse process of [`reconstruct()`] with the run's DDIM sampler and `inference.ddim_steps` steps (eta 0, clean condition, as at inference) |
//! | [`PREDICT`] | 8 | [`DiffAd::predict_batch`] on 8 images: `c = E(x)`, DDIM, `x_r = D(z_r)`, `x_inter`, segmenter, softmax, image scores |
//!
//! The networks hold seeded random weights ([`random_run`]): the speed of a
//! forward pass does not depend on the values of the weights. Every figure
//! is the median of `reps` timed calls after `warmup` untimed ones, with
//! [`Device::synchronize`] before the clock is read, so a GPU's queued
//! kernels are counted.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, DeviceLocation, Tensor};
use candle_nn::VarMap;
use diffad_diffusion::{reconstruct, timestep_tensor, Denoiser, ReconstructOptions, UNet};
use diffad_seg::DiscriminativeUNet;
use diffad_vae::AutoencoderKl;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Precision};
use crate::demo_data::good_image;
use crate::error::{Error, Result};
use crate::export::{CONFIG_JSON, SCHEDULER_CONFIG_JSON};
use crate::io::{create_dir_all, write_atomic};
use crate::model::DiffAd;
use crate::reconstructor::reconstruct_options;
use crate::run_dir::RunDir;
use crate::seeds;
use crate::stage::Stage;

/// [`Measurement::name`] of one denoiser forward pass.
pub const UNET_FORWARD: &str = "unet_forward";
/// [`Measurement::name`] of the DDIM reverse process of a batch of latents.
pub const DDIM_RECONSTRUCTION: &str = "ddim_reconstruction";
/// [`Measurement::name`] of the whole prediction path on a batch of images.
pub const PREDICT: &str = "predict";
/// The batch of the DDIM and predict measurements (the paper's
/// `inference.batch_size`).
pub const BATCH: usize = 8;
/// The name of the whole configuration file [`write_diffusers_configs`] writes
/// beside the diffusers folders.
pub const CONFIG_TOML: &str = "diffad.toml";

/// How many calls are made per measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeedOptions {
    /// Untimed calls first (kernel loading, cuBLAS handles, allocator growth).
    pub warmup: usize,
    /// Timed calls; the median is reported. At least 1.
    pub reps: usize,
}

impl Default for SpeedOptions {
    fn default() -> Self {
        Self { warmup: 1, reps: 5 }
    }
}

/// One timed piece of work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// [`UNET_FORWARD`], [`DDIM_RECONSTRUCTION`] or [`PREDICT`].
    pub name: String,
    /// Images (or latents) per call.
    pub batch: usize,
    /// Median seconds per call.
    pub seconds: f64,
    /// `batch / seconds`.
    pub images_per_second: f64,
}

/// The measurements of one configuration, device and precision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeedReport {
    /// Who measured: `diffad` here, `torch` in `scripts/torch_speed.py`.
    pub implementation: String,
    /// `cpu`, `cuda:N` or `metal:N`.
    pub device: String,
    /// The networks' precision.
    pub precision: Precision,
    /// Image side.
    pub image_size: usize,
    /// Latent side (`image_size / f`).
    pub latent_size: usize,
    /// DDIM steps of [`DDIM_RECONSTRUCTION`] and [`PREDICT`].
    pub ddim_steps: usize,
    /// The calls made per measurement.
    pub options: SpeedOptions,
    /// The figures, in the order of the module documentation's table.
    pub measurements: Vec<Measurement>,
}

impl SpeedReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: "<speed report>".into(),
            source,
        })
    }

    /// Writes [`to_json`](Self::to_json) to `path` atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut text = self.to_json()?;
        text.push('\n');
        write_atomic(path, text.as_bytes())
    }

    /// Reads a report written by [`write_json`](Self::write_json) (or by
    /// `scripts/torch_speed.py`).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A measurement by name and batch.
    pub fn get(&self, name: &str, batch: usize) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.name == name && m.batch == batch)
    }

    /// A human label of a measurement: `UNet forward`, `DDIM-10 reconstruction`, `predict`.
    pub fn label(&self, name: &str) -> String {
        match name {
            UNET_FORWARD => "UNet forward".to_string(),
            DDIM_RECONSTRUCTION => format!("DDIM-{} reconstruction", self.ddim_steps),
            PREDICT => format!("predict (DDIM-{})", self.ddim_steps),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for SpeedReport {
    /// A markdown table: measurement, batch, seconds per call, images/s.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} on {}, {}, {}x{} images ({}x{} latents), median of {} after {} warm-up",
            self.implementation,
            self.device,
            self.precision,
            self.image_size,
            self.image_size,
            self.latent_size,
            self.latent_size,
            self.options.reps,
            self.options.warmup
        )?;
        writeln!(f)?;
        writeln!(f, "| measurement | batch | s/call | images/s |")?;
        writeln!(f, "|---|---:|---:|---:|")?;
        for m in &self.measurements {
            writeln!(
                f,
                "| {} | {} | {:.4} | {:.2} |",
                self.label(&m.name),
                m.batch,
                m.seconds,
                m.images_per_second
            )?;
        }
        Ok(())
    }
}

/// A run directory at `root` with seeded random weights (seed 0) for every
/// stage of `config`, as a trained run would be loaded: `config.toml`, the
/// VAE, the denoiser and the segmenter. The weights are drawn on the CPU
/// (`diffad_nn::init`), so the files are the same whatever `device`.
///
/// An existing run at `root` made with the same configuration is reopened and
/// only its missing weights are written (a folder made with another
/// configuration is [`Error::ConfigMismatch`]); every file is written
/// atomically.
pub fn random_run(root: &Path, config: &Config, device: &Device) -> Result<RunDir> {
    let run = RunDir::create(root, config.clone())?;
    let missing = |stage| !run.weights(stage).is_file();
    if missing(Stage::Vae) {
        AutoencoderKl::new(config.vae_architecture(), 0, device)?.save(run.weights(Stage::Vae))?;
    }
    if missing(Stage::Ldm) {
        let vars = VarMap::new();
        let vb = diffad_nn::init::seeded_var_builder(&vars, 0, DType::F32, device);
        UNet::new(config.unet_architecture(), vb)?;
        diffad_nn::checkpoint::save_varmap(&vars, &run.weights(Stage::Ldm))?;
    }
    if missing(Stage::Segmenter) {
        let vars = VarMap::new();
        DiscriminativeUNet::init(config.segmenter_architecture(), &vars, 0, device)?;
        DiscriminativeUNet::save(&vars, run.weights(Stage::Segmenter))?;
    }
    Ok(run)
}

/// Writes the architectures of `config` as diffusers configs under `dir`
/// (the files [`crate::export`] writes, without weights), and the whole
/// configuration as [`CONFIG_TOML`], for `scripts/torch_speed.py`:
///
/// ```text
/// <dir>/vae/config.json                    AutoencoderKL
/// <dir>/unet/config.json                   UNet2DModel
/// <dir>/scheduler/scheduler_config.json    DDIMScheduler
/// <dir>/diffad.toml                        image size, steps, segmenter, ...
/// ```
pub fn write_diffusers_configs(config: &Config, dir: &Path) -> Result<()> {
    config.validate(Path::new("<config>"))?;
    create_dir_all(dir)?;
    let ddim = config.ddim(config.inference.ddim_steps)?;
    let files = [
        (
            dir.join("vae").join(CONFIG_JSON),
            config.vae_architecture().to_diffusers_json(),
        ),
        (
            dir.join("unet").join(CONFIG_JSON),
            config.unet_architecture().to_diffusers_json(),
        ),
        (
            dir.join("scheduler").join(SCHEDULER_CONFIG_JSON),
            ddim.config().to_diffusers_json(),
        ),
        (dir.join(CONFIG_TOML), config.to_toml_string()?),
    ];
    for (path, text) in files {
        write_atomic(&path, text.as_bytes())?;
    }
    Ok(())
}

/// Measures the module's four figures for `config` on `device` with the
/// networks in `precision`, on seeded random weights in a run directory at
/// `root` ([`random_run`]; reused if it holds the same configuration).
///
/// The run's `inference.batch_size` is set to [`BATCH`], so the predict path
/// takes the 8 images in one batch; everything else is `config`'s.
pub fn measure_speed(
    config: &Config,
    root: &Path,
    device: &Device,
    precision: Precision,
    options: &SpeedOptions,
) -> Result<SpeedReport> {
    if options.reps == 0 {
        return Err(Error::Config {
            path: "<speed>".into(),
            message: "reps must be at least 1".into(),
        });
    }
    let mut config = config.clone();
    config.inference.batch_size = BATCH;
    let run = random_run(root, &config, device)?;
    let steps = config.inference.ddim_steps;
    let (latent, side) = (config.vae.latent_channels, config.latent_size());
    let conditional = config.condition_mode().is_conditional();
    let timer = Timer { device, options };
    let mut measurements = Vec::with_capacity(4);

    // The denoiser and the sampler alone, as the reconstructor loads them.
    let unet = UNet::load_with_dtype(
        config.unet_architecture(),
        run.require(Stage::Ldm)?,
        precision.dtype(),
        device,
    )?;
    for batch in [1, BATCH] {
        let z_t = Tensor::randn(0f32, 1.0, (batch, latent, side, side), device)?;
        let c = Tensor::randn(0f32, 1.0, (batch, latent, side, side), device)?;
        let t = timestep_tensor(&vec![config.ldm.timesteps / 2; batch], device)?;
        let condition = conditional.then_some(&c);
        let seconds = timer.median(|| Ok(unet.predict(&z_t, &t, condition)?))?;
        measurements.push(Measurement::new(UNET_FORWARD, batch, seconds));
    }
    let ddim = config.ddim(steps)?;
    let opts = ReconstructOptions {
        shared_stream: true,
        ..reconstruct_options(
            &config,
            steps,
            seeds::mix(config.seed, seeds::RECONSTRUCTION),
            0,
        )
    };
    let c = Tensor::randn(0f32, 1.0, (BATCH, latent, side, side), device)?;
    let seconds = timer.median(|| Ok(reconstruct(&unet, &ddim, &c, &opts)?))?;
    measurements.push(Measurement::new(DDIM_RECONSTRUCTION, BATCH, seconds));
    drop(unet);

    let model = DiffAd::load_with_precision(&run, device, precision)?;
    let images = (0..BATCH as u64)
        .map(|i| good_image(config.data.image_size, 0, 0, i))
        .collect::<Result<Vec<_>>>()?;
    let seconds = timer.median(|| model.predict_batch(&images))?;
    measurements.push(Measurement::new(PREDICT, BATCH, seconds));

    Ok(SpeedReport {
        implementation: "diffad".into(),
        device: device_name(device),
        precision,
        image_size: config.data.image_size,
        latent_size: side,
        ddim_steps: steps,
        options: *options,
        measurements,
    })
}

impl Measurement {
    fn new(name: &str, batch: usize, seconds: f64) -> Self {
        Self {
            name: name.to_string(),
            batch,
            seconds,
            images_per_second: batch as f64 / seconds,
        }
    }
}

/// `cpu`, `cuda:N` or `metal:N`.
fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Times calls on one device.
struct Timer<'a> {
    device: &'a Device,
    options: &'a SpeedOptions,
}

impl Timer<'_> {
    /// The median seconds of `options.reps` calls of `work` after
    /// `options.warmup` untimed ones, the device synchronised before each
    /// reading of the clock (the result is dropped only after it).
    fn median<T>(&self, mut work: impl FnMut() -> Result<T>) -> Result<f64> {
        for _ in 0..self.options.warmup {
            work()?;
        }
        self.device.synchronize()?;
        let mut times = Vec::with_capacity(self.options.reps);
        for _ in 0..self.options.reps {
            let start = Instant::now();
            let out = work()?;
            self.device.synchronize()?;
            times.push(start.elapsed().as_secs_f64());
            drop(out);
        }
        times.sort_by(f64::total_cmp);
        let n = times.len();
        Ok(if n % 2 == 1 {
            times[n / 2]
        } else {
            0.5 * (times[n / 2 - 1] + times[n / 2])
        })
    }
}
