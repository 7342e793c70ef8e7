//! Training the three stages of DiffAD in a [`RunDir`], each resumable from
//! its atomic checkpoint (paper Sec. 3, Fig. 2):
//!
//! 1. `vae`: the KL autoencoder on the good images (or a pretrained
//!    diffusers `AutoencoderKL`, `vae.pretrained`);
//! 2. `ldm`: the conditional LDM on `z ~ E(x)` with the condition
//!    `c = E(x_a)` of DRAEM-synthesised anomalies (Sec. 3.3);
//! 3. `seg`: the segmenter on `(x_r, x_inter, x_a)` (Sec. 3.4).
//!
//! Before the stages, a seeded share of the good images
//! (`data.validation_fraction`) is held out; after them, the decision
//! thresholds are set on it (`thresholds.json`, see `crate::thresholds`).
//!
//! Progress goes to the caller's [`Progress`] (one per stage); the library
//! prints nothing.

mod ldm;
mod samples;
mod seg;
mod thresholds;
mod vae;

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use diffad_nn::progress::Progress;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::data::RgbImage;
use crate::error::{Error, Result};
use crate::io::create_dir_all;
use crate::run_dir::RunDir;
use crate::seeds;
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
    let (training, validation) = split_validation(run.config(), images)?;
    let images = &training[..];
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
        let mut log = LossLog::open(&run.loss_log(stage), reporter.as_mut())?;
        let (steps, final_loss) = match stage {
            Stage::Vae => vae::train_vae(run, images, device, &mut log)?,
            Stage::Ldm => ldm::train_ldm(run, images, device, &mut log)?,
            Stage::Segmenter => seg::train_segmenter(run, images, device, &mut log)?,
        };
        log.close()?;
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
    let thresholds_file = run.root().join(crate::thresholds::THRESHOLDS_FILE);
    if !validation.is_empty() && run.is_done(Stage::Segmenter) && !thresholds_file.is_file() {
        let t = thresholds::calibrate(run, &validation, device)?;
        run.log(&format!(
            "thresholds: image {} pixel {} (score range {}..{}, {} held-out images)",
            t.image,
            t.pixel,
            t.min,
            t.max,
            validation.len()
        ))?;
    }
    Ok(reports)
}

/// The indices of the good images held out for the thresholds: none when
/// `data.validation_fraction` is 0, else `max(2, round(fraction * n))` drawn
/// on the stream `seeds::VALIDATION`, sorted. At least one image must stay
/// for training.
pub fn validation_indices(config: &Config, n: usize) -> Result<Vec<usize>> {
    let fraction = config.data.validation_fraction;
    if fraction <= 0.0 {
        return Ok(Vec::new());
    }
    let held = ((fraction * n as f64).round() as usize).max(2);
    if held >= n {
        return Err(Error::Shape(format!(
            "{n} good images are too few to hold out {held} for the thresholds (data.validation_fraction = {fraction}); add images or set it to 0"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seeds::mix(config.seed, seeds::VALIDATION));
    order.shuffle(&mut rng);
    let mut held_out = order[..held].to_vec();
    held_out.sort_unstable();
    Ok(held_out)
}

/// `(training, validation)` images (see [`validation_indices`]); the
/// training images keep their order, and are borrowed when none is held out.
fn split_validation<'a>(
    config: &Config,
    images: &'a [RgbImage],
) -> Result<(Cow<'a, [RgbImage]>, Vec<RgbImage>)> {
    let held = validation_indices(config, images.len())?;
    if held.is_empty() {
        return Ok((Cow::Borrowed(images), Vec::new()));
    }
    let (mut training, mut validation) = (Vec::new(), Vec::new());
    for (i, image) in images.iter().enumerate() {
        if held.binary_search(&i).is_ok() {
            validation.push(image.clone());
        } else {
            training.push(image.clone());
        }
    }
    Ok((Cow::Owned(training), validation))
}

/// A [`Progress`] that appends every step's loss to a CSV file (`step,loss`,
/// with a header when the file is new) and passes everything on to the
/// caller's reporter. A write error is kept and returned by [`LossLog::close`].
struct LossLog<'a> {
    path: PathBuf,
    file: BufWriter<fs::File>,
    inner: &'a mut dyn Progress,
    error: Option<std::io::Error>,
}

impl<'a> LossLog<'a> {
    fn open(path: &Path, inner: &'a mut dyn Progress) -> Result<Self> {
        if let Some(dir) = path.parent() {
            create_dir_all(dir)?;
        }
        let new = !path.exists();
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut file = BufWriter::new(file);
        if new {
            writeln!(file, "step,loss").map_err(|e| Error::io(path, e))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            inner,
            error: None,
        })
    }

    fn close(mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(Error::io(&self.path, e));
        }
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

impl Progress for LossLog<'_> {
    fn start(&mut self, total: Option<u64>, done: u64) {
        self.inner.start(total, done);
    }

    fn step(&mut self, step: u64, loss: f64) {
        if self.error.is_none() {
            // Flushed every step so a crash loses at most the line being written.
            if let Err(e) = writeln!(self.file, "{step},{loss}").and_then(|()| self.file.flush()) {
                self.error = Some(e);
            }
        }
        self.inner.step(step, loss);
    }

    fn finish(&mut self) {
        self.inner.finish();
    }
}

/// Optimiser steps of one epoch over `n` images in batches of `batch`.
fn steps_per_epoch(n: usize, batch: usize) -> u64 {
    n.div_ceil(batch) as u64
}
