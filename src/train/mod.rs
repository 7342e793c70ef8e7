//! Training the three stages of DiffAD in a [`RunDir`], each resumable from
//! its atomic checkpoint (paper Sec. 3, Fig. 2):
//!
//! 1. `vae`: the KL autoencoder on the good images (or a pretrained
//!    diffusers `AutoencoderKL`, `vae.pretrained`);
//! 2. `ldm`: the conditional LDM on `z ~ E(x)` with the condition
//!    `c = E(x_a)` of DRAEM-synthesised anomalies (Sec. 3.3);
//! 3. `seg`: the segmenter on `(x_r, x_inter, x_a)` (Sec. 3.4).
//!
//! Progress goes to the caller's [`Progress`] (one per stage); the library
//! prints nothing.

mod ldm;
mod samples;
mod seg;
mod vae;

use std::fmt;
use std::time::Instant;

use candle_core::Device;
use diffad_nn::progress::Progress;

use crate::data::RgbImage;
use crate::error::{Error, Result};
use crate::run_dir::RunDir;
use crate::stage::Stage;

/// Makes the progress reporter of each long task, given its label (`vae`,
/// `ldm`, `seg`, `eval`): the binary returns a progress bar, a library user
/// [`diffad_nn::progress::Silent`] or their own.
pub type ProgressFactory<'a> = dyn FnMut(&str) -> Box<dyn Progress> + 'a;

/// A [`ProgressFactory`] that reports nothing.
pub fn silent(_label: &str) -> Box<dyn Progress> {
    Box::new(diffad_nn::progress::Silent)
}

/// What [`train`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainOptions {
    /// The stages to run (all, in order, by default). A stage whose
    /// predecessor is not done is an error.
    pub stages: Vec<Stage>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            stages: Stage::ALL.to_vec(),
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

/// What one stage's training returns: optimiser steps run now and the last loss.
type StageOutcome = (u64, Option<f64>);

/// Trains the requested stages of `run` on good `images` (all of the
/// configured `image_size`), resuming interrupted stages; `progress` makes
/// the reporter of each stage.
pub fn train(
    run: &RunDir,
    images: &[RgbImage],
    device: &Device,
    options: &TrainOptions,
    progress: &mut ProgressFactory,
) -> Result<Vec<StageReport>> {
    let size = run.config().data.image_size;
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
        let mut reporter = progress(stage.name());
        let (steps, final_loss) = match stage {
            Stage::Vae => vae::train_vae(run, images, device, reporter.as_mut())?,
            Stage::Ldm => ldm::train_ldm(run, images, device, reporter.as_mut())?,
            Stage::Segmenter => seg::train_segmenter(run, images, device, reporter.as_mut())?,
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

/// Optimiser steps of one epoch over `n` images in batches of `batch`.
fn steps_per_epoch(n: usize, batch: usize) -> u64 {
    n.div_ceil(batch) as u64
}
