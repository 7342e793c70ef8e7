//! The VAE stage: the KL autoencoder trained on the good images
//! (reconstruction + SSIM + KL, `docs/reference.md` §2), or a pretrained
//! diffusers `AutoencoderKL` copied into the run: a bare safetensors file (with the
//! `[vae]` architecture) or a diffusers folder (with its own `config.json`, copied
//! beside the weights).

use std::fs;
use std::path::Path;

use candle_core::Device;
use diffad_nn::progress::Progress;
use diffad_vae::{AutoencoderKl, DiffusersFolder, VaeTrainer};

use super::{steps_per_epoch, StageOutcome};
use crate::data::{images_to_tensor, RgbImage};
use crate::error::{Error, Result};
use crate::io::{remove_dir, write_atomic};
use crate::run_dir::RunDir;
use crate::seeds;
use crate::stage::Stage;

/// Trains (or resumes, or loads `vae.pretrained`) and saves the VAE.
pub(super) fn train_vae(
    run: &RunDir,
    images: &[RgbImage],
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<StageOutcome> {
    let config = run.config();
    let arch = config.vae_architecture();
    let out = run.weights(Stage::Vae);
    if let Some(pretrained) = &config.vae.pretrained {
        let vae = if pretrained.is_dir() {
            load_diffusers_folder(run, pretrained, device)?
        } else {
            AutoencoderKl::load(arch, pretrained, device)?
        };
        vae.save(&out)?;
        run.log(&format!("vae: loaded {}", pretrained.display()))?;
        return Ok((0, None));
    }
    let v = &config.vae;
    let total = v.epochs as u64 * steps_per_epoch(images.len(), v.batch_size);
    let checkpoints = run.checkpoint(Stage::Vae);
    let train_config = config.vae_train_config(total, checkpoints.clone());
    let mut trainer = match VaeTrainer::latest_checkpoint(&checkpoints)? {
        Some(latest) => {
            run.log(&format!("vae: resuming from {}", latest.display()))?;
            VaeTrainer::resume(&latest, Some(train_config), device)?
        }
        None => {
            let vae = AutoencoderKl::new(arch, seeds::mix(config.seed, seeds::VAE), device)?;
            VaeTrainer::new(vae, train_config)?
        }
    };
    let data = images_to_tensor(images, &Device::Cpu)?;
    let before = trainer.step();
    let history = trainer.train(&data, progress)?;
    trainer.vae().save(&out)?;
    remove_dir(&checkpoints)?;
    Ok((trainer.step() - before, history.last().map(|s| s.loss)))
}

/// Loads the diffusers `AutoencoderKL` folder `dir` (its architecture from its
/// `config.json`) and copies that `config.json` into the run
/// ([`RunDir::vae_config`]), so later stages rebuild the same architecture. Its latents
/// must have the shape `[vae]` promises the LDM (`latent_channels`, and the factor
/// `f` of `channel_mult`): anything else is an [`Error::Config`] naming the file.
fn load_diffusers_folder(run: &RunDir, dir: &Path, device: &Device) -> Result<AutoencoderKl> {
    let folder = DiffusersFolder::open(dir)?;
    let v = &run.config().vae;
    let (latent, f) = (
        folder.config.latent_channels,
        folder.config.downsample_factor(),
    );
    if (latent, f) != (v.latent_channels, v.downsample_factor()) {
        return Err(Error::Config {
            path: folder.config_file,
            message: format!(
                "this VAE makes {latent}-channel latents at 1/{f} of the image side, but the run's \
                 [vae] section says {} channels at 1/{} (set vae.latent_channels and a \
                 vae.channel_mult of {} levels to match)",
                v.latent_channels,
                v.downsample_factor(),
                f.trailing_zeros() + 1
            ),
        });
    }
    let vae = AutoencoderKl::load(folder.config, &folder.weights_file, device)?;
    let bytes = fs::read(&folder.config_file).map_err(|e| Error::io(&folder.config_file, e))?;
    write_atomic(&run.vae_config(), &bytes)?;
    Ok(vae)
}
