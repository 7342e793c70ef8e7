//! Export of a run's VAE, denoiser and sampler as diffusers folders, so that
//! `AutoencoderKL.from_pretrained`, `UNet2DModel.from_pretrained` and
//! `DDIMScheduler.from_pretrained` load them:
//!
//! ```text
//! <out>/vae/config.json                              AutoencoderKL (scaling_factor 1)
//! <out>/vae/diffusion_pytorch_model.safetensors      the run's vae/vae.safetensors
//! <out>/unet/config.json                             UNet2DModel
//! <out>/unet/diffusion_pytorch_model.safetensors     the run's ldm/unet.safetensors
//! <out>/scheduler/scheduler_config.json              DDIMScheduler (the run's schedule)
//! ```
//!
//! Every parameter of the VAE and the UNet already has its diffusers name, so the
//! weights are copied as they are, after a strict load with the run's architecture has
//! checked them. How to use the export in diffusers (`scripts/check_diffusers_export.py`
//! does exactly this and compares the outputs with ours):
//!
//! * `c = vae.encode(2 x - 1).latent_dist.mean` (no scaling: DiffAD's LDM runs on the
//!   unscaled posterior mean, hence `scaling_factor` 1);
//! * the denoiser's input is `cat([z_t, c], dim=1)` (paper Sec. 3.3; the UNet has
//!   `2 x latent_channels` input channels unless the run is unconditional);
//! * `scheduler.set_timesteps(n)` with `n = inference.ddim_steps` and `eta = 0` in
//!   `scheduler.step` (diffusers takes both at sampling time, not from the config);
//! * `x_r = (vae.decode(z_0).sample + 1) / 2`, clamped to `[0, 1]`.
//!
//! The segmenter has no diffusers counterpart and is not exported.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::Device;
use diffad_diffusion::UNet;
use diffad_vae::AutoencoderKl;

use crate::error::{Error, Result};
use crate::io::{write_atomic, write_atomic_with};
use crate::run_dir::RunDir;
use crate::stage::Stage;

/// The name of a diffusers model's config file.
pub const CONFIG_JSON: &str = "config.json";
/// The name of a diffusers model's weights file.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// The name of a diffusers scheduler's config file.
pub const SCHEDULER_CONFIG_JSON: &str = "scheduler_config.json";

/// The folders [`export_diffusers`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffusersExport {
    /// `<out>/vae`: the `AutoencoderKL`.
    pub vae: PathBuf,
    /// `<out>/unet`: the `UNet2DModel`.
    pub unet: PathBuf,
    /// `<out>/scheduler`: the `DDIMScheduler`.
    pub scheduler: PathBuf,
}

/// Writes the run's final VAE and denoiser and its DDIM sampler as diffusers folders
/// under `out` (see the module documentation). The run needs its `vae` and `ldm`
/// stages ([`Error::MissingCheckpoint`] otherwise); weights that do not fit the run's
/// architecture are an error naming the weights file. Every file is written
/// atomically; files already in `out` under the same names are replaced.
pub fn export_diffusers(run: &RunDir, out: &Path) -> Result<DiffusersExport> {
    let config = run.config();
    let vae_weights = run.require(Stage::Vae)?;
    let unet_weights = run.require(Stage::Ldm)?;
    let vae_arch = run.vae_architecture()?;
    let unet_arch = config.unet_architecture();
    // Strict loads: the copies below are known to fit their config.json.
    AutoencoderKl::load(vae_arch.clone(), &vae_weights, &Device::Cpu)?;
    UNet::load(unet_arch.clone(), &unet_weights, &Device::Cpu)?;

    let export = DiffusersExport {
        vae: out.join("vae"),
        unet: out.join("unet"),
        scheduler: out.join("scheduler"),
    };
    copy_atomic(&vae_weights, &export.vae.join(WEIGHTS_FILE))?;
    write_json(
        &export.vae.join(CONFIG_JSON),
        &vae_arch.to_diffusers_json(),
        config.data.image_size,
    )?;
    copy_atomic(&unet_weights, &export.unet.join(WEIGHTS_FILE))?;
    write_json(
        &export.unet.join(CONFIG_JSON),
        &unet_arch.to_diffusers_json(),
        config.latent_size(),
    )?;
    let ddim = config.ddim(config.inference.ddim_steps)?;
    write_atomic(
        &export.scheduler.join(SCHEDULER_CONFIG_JSON),
        ddim.config().to_diffusers_json().as_bytes(),
    )?;
    Ok(export)
}

/// Writes a model's diffusers config `json` with its `sample_size` (the side of the
/// model's input, the default size of diffusers pipelines).
fn write_json(path: &Path, json: &str, sample_size: usize) -> Result<()> {
    let json_error = |source| Error::Json {
        path: path.to_path_buf(),
        source,
    };
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(json_error)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("sample_size".into(), sample_size.into());
    }
    let mut text = serde_json::to_string_pretty(&value).map_err(json_error)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Copies `from` to `to` atomically, streaming (the paper's UNet is 1 GB).
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    write_atomic_with(to, |tmp| {
        fs::copy(from, tmp).map_err(|e| Error::io(from, e))?;
        fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(tmp, e))
    })
}
