//! Setting the decision thresholds after training, without real defects: the
//! held-out good images (label 0) and copies of them with DRAEM anomalies
//! (label 1, mask `M`) are scored by the trained model, and the image and
//! pixel thresholds are the ones that maximise F1 on them (anomalib sets its
//! adaptive threshold the same way on a validation set). The image scores'
//! range is stored to normalise scores (`crate::thresholds`).

use candle_core::Device;
use diffad_metrics::f1_max;

use crate::data::{Plane, RgbImage};
use crate::error::{Error, Result};
use crate::model::DiffAd;
use crate::run_dir::RunDir;
use crate::thresholds::Thresholds;

/// Scores `validation` and copies of it with synthetic anomalies (the stream
/// `seeds::VALIDATION`, one anomaly per image index), and stores the F1-max
/// thresholds in `<run>/thresholds.json`.
pub(super) fn calibrate(
    run: &RunDir,
    validation: &[RgbImage],
    device: &Device,
) -> Result<Thresholds> {
    let model = DiffAd::load(run, device)?;
    let synth = run.config().validation_synthesizer()?;
    let mut inputs = Vec::with_capacity(2 * validation.len());
    let mut masks = Vec::with_capacity(2 * validation.len());
    for (i, image) in validation.iter().enumerate() {
        inputs.push(image.clone());
        masks.push(Plane::zeros(image.height(), image.width())?);
        let sample = synth.synthesize_indexed(image, None, 0, i as u64)?;
        inputs.push(sample.augmented);
        masks.push(sample.mask);
    }
    let predictions = model.predict_batch(&inputs)?;
    let scores: Vec<f32> = predictions.iter().map(|p| p.score).collect();
    let labels: Vec<bool> = masks.iter().map(|m| m.sum() > 0.0).collect();
    let pixel_scores: Vec<f32> = predictions
        .iter()
        .flat_map(|p| p.map.as_slice().iter().copied())
        .collect();
    let pixel_labels: Vec<bool> = masks
        .iter()
        .flat_map(|m| m.as_slice().iter().map(|&v| v > 0.5))
        .collect();
    let no_anomaly =
        || Error::Shape("threshold calibration: no synthetic anomaly was drawn".into());
    if !labels.contains(&true) {
        return Err(no_anomaly());
    }
    let image = f1_max(&scores, &labels)?.threshold;
    let pixel = f1_max(&pixel_scores, &pixel_labels)?.threshold;
    let (min, max) = scores
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        });
    let thresholds = Thresholds {
        image,
        pixel,
        min,
        max,
    };
    thresholds.save(run.root())?;
    Ok(thresholds)
}
