//! The VAE stage: the KL autoencoder trained on the good images
//! (reconstruction + SSIM + KL, `docs/reference.md` §2), or a pretrained
//! diffusers `AutoencoderKL` copied into the run.

use candle_core::Device;
use diffad_nn::progress::Progress;
use diffad_vae::{AutoencoderKl, VaeTrainer};

use super::{steps_per_epoch, StageOutcome};
use crate::data::{images_to_tensor, RgbImage};
use crate::error::Result;
use crate::io::remove_dir;
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
        let vae = AutoencoderKl::load(arch, pretrained, device)?;
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
