//! The segmenter stage: the discriminative U-Net trained with focal loss on
//! `(x_r, x_inter, x_a)` against the synthetic mask `M` (paper Sec. 3.4,
//! `docs/reference.md` §4). Each epoch draws fresh DRAEM anomalies of every
//! good image and reconstructs them with the frozen VAE and LDM.

use candle_core::{DType, Device};
use diffad_nn::progress::Progress;
use diffad_seg::{DiscriminativeUNet, ReconstructionSource, SegSample, SegTrainer};
use diffad_synth::AnomalySynthesizer;

use super::samples::synthesize;
use super::StageOutcome;
use crate::config::Config;
use crate::data::RgbImage;
use crate::error::Result;
use crate::io::{create_dir_all, remove_file};
use crate::reconstructor::{reconstruct_options, Reconstructor};
use crate::run_dir::RunDir;
use crate::seeds;
use crate::stage::Stage;

/// Trains (or resumes) and saves the segmenter.
pub(super) fn train_segmenter(
    run: &RunDir,
    images: &[RgbImage],
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<StageOutcome> {
    let config = run.config();
    let reconstructor = Reconstructor::load(
        run,
        device,
        DType::F32,
        config.segmenter.reconstruction_ddim_steps,
    )?;
    let checkpoint = run.checkpoint(Stage::Segmenter);
    let train_config = config.seg_train_config(&checkpoint);
    let mut trainer = if checkpoint.is_file() {
        run.log(&format!("seg: resuming from {}", checkpoint.display()))?;
        SegTrainer::resume(&checkpoint, Some(train_config), device)?
    } else {
        if let Some(dir) = checkpoint.parent() {
            create_dir_all(dir)?;
        }
        SegTrainer::new(config.segmenter_architecture(), train_config, device)?
    };
    let steps_before = trainer.step();
    let mut source = SegSource {
        config,
        reconstructor: &reconstructor,
        synth: config.seg_synthesizer()?,
        normals: images,
        device: device.clone(),
        epoch: None,
        cache: Vec::new(),
    };
    let report = trainer.train(&mut source, progress)?;
    DiscriminativeUNet::save(trainer.varmap(), run.weights(Stage::Segmenter))?;
    remove_file(&checkpoint)?;
    Ok((
        trainer.step() - steps_before,
        report.epoch_losses.last().copied(),
    ))
}

/// The segmenter's training data: for each epoch, fresh DRAEM anomalies of
/// every good image and their DDIM reconstructions (computed in batches when
/// the epoch is first asked for, then served from the cache).
struct SegSource<'a> {
    config: &'a Config,
    reconstructor: &'a Reconstructor,
    synth: AnomalySynthesizer,
    normals: &'a [RgbImage],
    device: Device,
    epoch: Option<usize>,
    cache: Vec<SegSample>,
}

impl SegSource<'_> {
    fn fill(&mut self, epoch: usize) -> Result<()> {
        self.cache.clear();
        let n = self.normals.len();
        let indices: Vec<usize> = (0..n).collect();
        let seed = seeds::mix(
            seeds::mix(self.config.seed, seeds::RECONSTRUCTION),
            epoch as u64,
        );
        for chunk in indices.chunks(self.config.inference.batch_size) {
            let batch = synthesize(&self.synth, self.normals, chunk, epoch as u64, &self.device)?;
            let opts = reconstruct_options(
                self.config,
                self.config.segmenter.reconstruction_ddim_steps,
                seed,
                chunk[0] as u64,
            );
            let rec = self.reconstructor.reconstruct(&batch.augmented, &opts)?;
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
