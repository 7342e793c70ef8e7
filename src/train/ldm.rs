//! The LDM stage: the conditional denoiser trained on `z ~ E(x)` with the
//! condition `c = E(x_a)` of a synthesised anomaly, noised to an independent
//! `t_c` (the noisy condition embedding, paper Sec. 3.3) or as the configured
//! Table 1 variant.

use candle_core::{DType, Device, Tensor};
use diffad_diffusion::{LdmTrainer, TrainLoopOptions};
use diffad_nn::progress::Progress;

use super::samples::synthesize;
use super::{steps_per_epoch, StageOutcome};
use crate::data::RgbImage;
use crate::error::Result;
use crate::io::{create_dir_all, remove_file};
use crate::reconstructor::load_vae;
use crate::run_dir::RunDir;
use crate::seeds::epoch_order;
use crate::stage::Stage;

/// Trains (or resumes) the denoiser and saves its EMA weights.
pub(super) fn train_ldm(
    run: &RunDir,
    images: &[RgbImage],
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<StageOutcome> {
    let config = run.config();
    let vae = load_vae(run, DType::F32, device)?;
    let l = &config.ldm;
    let checkpoint = run.checkpoint(Stage::Ldm);
    if let Some(dir) = checkpoint.parent() {
        create_dir_all(dir)?;
    }
    let mut trainer = if checkpoint.is_file() {
        run.log(&format!("ldm: resuming from {}", checkpoint.display()))?;
        LdmTrainer::resume(&checkpoint, None, device)?
    } else {
        LdmTrainer::new(
            config.unet_architecture(),
            config.ldm_train_config(),
            device,
        )?
    };
    let n = images.len();
    let per_epoch = steps_per_epoch(n, l.batch_size);
    let total = l.epochs as u64 * per_epoch;
    let start = trainer.step();
    let synth = config.ldm_synthesizer()?;
    let normals = images;
    let seed = config.seed;
    let batch_size = l.batch_size;
    let batch_device = device.clone();
    let batches = (start..total).map(move |step| -> Result<(Tensor, Tensor)> {
        let (epoch, b) = (step / per_epoch, (step % per_epoch) as usize);
        let order = epoch_order(seed, epoch, n);
        let indices = &order[b * batch_size..((b + 1) * batch_size).min(n)];
        let batch = synthesize(&synth, normals, indices, epoch, &batch_device)?;
        // DRAEM may rotate the normal image; the target is the image the
        // anomaly was pasted on.
        Ok((batch.normal, batch.augmented))
    });
    let summary = trainer.train_on_images(
        &vae,
        batches,
        &TrainLoopOptions {
            max_steps: Some(total.saturating_sub(start)),
            checkpoint: Some(checkpoint.clone()),
            checkpoint_every: Some((total / 10).max(1)),
        },
        progress,
    )?;
    trainer.export_unet(run.weights(Stage::Ldm), true)?;
    remove_file(&checkpoint)?;
    Ok((
        summary.steps,
        summary
            .last_loss
            .is_finite()
            .then_some(f64::from(summary.last_loss)),
    ))
}
