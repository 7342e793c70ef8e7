//! Evaluation of a trained model on an MVTec AD class (`docs/reference.md` §5):
//! image AUROC, pixel AUROC, pixel AP, AU-PRO and F1-max (overall and per
//! defect type, via `diffad-metrics`), `scores.csv`, float32 TIFF maps in the
//! MVTec evaluation layout and PNG overlays.
//!
//! Output folder:
//!
//! ```text
//! <out>/metrics.json
//! <out>/scores.csv
//! <out>/anomaly_maps/<class>/test/<defect>/<stem>.tiff   (at the test image's own resolution)
//! <out>/overlays/<class>/test/<defect>/<stem>.png        (panel: x_a | x_r | x_inter | map over x_a | ground truth)
//! ```
//!
//! Metrics are computed at the model resolution (`data.image_size`) with the
//! ground truth resized by nearest neighbour, as DRAEM and DiffAD do; the
//! TIFFs are bilinearly resized to the original image size, which is what
//! the MVTec AD evaluation script compares against its full-size masks.

use std::path::{Path, PathBuf};

use diffad_nn::progress::Progress;
use rayon::prelude::*;

use crate::data::{Mask, MvtecClass, RgbImage, TestSample};
use crate::error::{Error, Result};
use crate::model::DiffAd;
use crate::report::{
    mvtec_map_path, write_panel, write_scores_csv, write_tiff, AnomalyMap, Decisions, Metrics,
    ScoreRow, ThresholdedMetrics,
};
use crate::thresholds::Thresholds;

/// What [`evaluate`] writes besides `metrics.json` and `scores.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOptions {
    /// Write the float32 TIFF maps.
    pub anomaly_maps: bool,
    /// Write the PNG overlays.
    pub overlays: bool,
    /// The run's stored thresholds ([`Thresholds::load`]): with them the
    /// metrics add their precision, recall and F1 on the test set.
    pub thresholds: Option<Thresholds>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            anomaly_maps: true,
            overlays: true,
            thresholds: None,
        }
    }
}

/// Files written by [`evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOutput {
    /// The metrics (also in `metrics.json`).
    pub metrics: Metrics,
    /// `<out>/metrics.json`.
    pub metrics_json: PathBuf,
    /// `<out>/scores.csv`.
    pub scores_csv: PathBuf,
    /// `<out>/anomaly_maps` (the MVTec evaluation script's `--anomaly_maps_dir`).
    pub anomaly_maps_dir: PathBuf,
    /// `<out>/overlays`.
    pub overlays_dir: PathBuf,
    /// Wall time per test image of the model (seconds), loading excluded.
    pub seconds_per_image: f64,
}

/// Bilinear resize of a map to `height x width` (no-op at the same size).
pub fn resize_map(map: &AnomalyMap, height: usize, width: usize) -> Result<AnomalyMap> {
    if (map.height(), map.width()) == (height, width) {
        return Ok(map.clone());
    }
    let buf: image::ImageBuffer<image::Luma<f32>, Vec<f32>> = image::ImageBuffer::from_raw(
        map.width() as u32,
        map.height() as u32,
        map.as_slice().to_vec(),
    )
    .ok_or_else(|| Error::Shape("anomaly map buffer".into()))?;
    let resized = image::imageops::resize(
        &buf,
        width as u32,
        height as u32,
        image::imageops::FilterType::Triangle,
    );
    Ok(AnomalyMap::finite(height, width, resized.into_raw())?)
}

/// Evaluates `model` on the test split of `class`, writing into `out`;
/// `progress` counts the test images.
pub fn evaluate(
    model: &DiffAd,
    class: &MvtecClass,
    out: &Path,
    options: &EvalOptions,
    progress: &mut dyn Progress,
) -> Result<EvalOutput> {
    if class.test.is_empty() {
        return Err(Error::Layout {
            path: class.root.clone(),
            reason: "no `test/<defect>` images to evaluate on".into(),
        });
    }
    let config = model.config();
    let size = config.data.image_size;
    let batch = config.inference.batch_size;
    // Without ground-truth masks only the image-level metrics exist.
    let masked = class.has_masks();
    let mut evaluator = if masked {
        Some(diffad_metrics::Evaluator::with_options(
            config.inference.score_kernel,
            0.3,
        )?)
    } else {
        None
    };
    let mut image_only = diffad_metrics::ImageMetrics::new();
    let maps_dir = out.join("anomaly_maps");
    let overlays_dir = out.join("overlays");
    progress.start(Some(class.test.len() as u64), 0);
    let mut rows = Vec::with_capacity(class.test.len());
    let mut model_seconds = 0.0;
    let mut good_psnr = Vec::new();
    // True positives, false positives and false negatives of the pixel threshold.
    let mut pixel_counts = [0u64; 3];
    for chunk in class.test.chunks(batch) {
        let loaded: Vec<(RgbImage, Mask, (u32, u32))> = chunk
            .par_iter()
            .map(|s| load_test(s, size))
            .collect::<Result<_>>()?;
        let images: Vec<RgbImage> = loaded.iter().map(|l| l.0.clone()).collect();
        let start = std::time::Instant::now();
        let analyses = model.analyse_batch(&images)?;
        model_seconds += start.elapsed().as_secs_f64();
        for ((sample, (image, mask, (w, h))), a) in chunk.iter().zip(&loaded).zip(&analyses) {
            let p = &a.prediction;
            if !sample.is_anomalous() {
                let all = vec![true; image.as_hwc().len()];
                good_psnr.push(diffad_metrics::psnr(
                    image.as_hwc(),
                    a.reconstruction.as_hwc(),
                    &all,
                )?);
            }
            let truth = mask.to_bool();
            let score = match &mut evaluator {
                Some(e) => e.add_view(&sample.defect, p.map.view(), truth.view())?,
                None => {
                    image_only.push_defect(&sample.defect, p.score, sample.is_anomalous())?;
                    p.score
                }
            };
            if let (Some(t), true) = (&options.thresholds, masked) {
                for (&v, &anomalous) in p.map.as_slice().iter().zip(truth.iter()) {
                    match (v >= t.pixel, anomalous) {
                        (true, true) => pixel_counts[0] += 1,
                        (true, false) => pixel_counts[1] += 1,
                        (false, true) => pixel_counts[2] += 1,
                        (false, false) => {}
                    }
                }
            }
            let stem = sample.stem();
            if options.anomaly_maps {
                let full = resize_map(&p.map, *h as usize, *w as usize)?;
                write_tiff(
                    &mvtec_map_path(&maps_dir, &class.name, &sample.defect, &stem),
                    &full,
                )?;
            }
            if options.overlays {
                let path = overlays_dir
                    .join(&class.name)
                    .join("test")
                    .join(&sample.defect)
                    .join(format!("{stem}.png"));
                write_panel(
                    &path,
                    image,
                    &a.reconstruction,
                    a.middle.as_ref(),
                    &p.map,
                    mask,
                )?;
            }
            rows.push(ScoreRow {
                path: sample.image.clone(),
                defect: sample.defect.clone(),
                label: u8::from(sample.is_anomalous()),
                score,
            });
            progress.step(rows.len() as u64, f64::from(score));
        }
    }
    progress.finish();
    let mut metrics = match evaluator {
        Some(e) => Metrics::new(&class.name, e.finish()?),
        None => Metrics::image_only(&class.name, image_only.finish()?),
    };
    // An exact reconstruction has an infinite PSNR; the mean stays finite
    // (JSON has no infinity) by capping each image at 100 dB.
    metrics.reconstruction_psnr = (!good_psnr.is_empty())
        .then(|| good_psnr.iter().map(|p| p.min(100.0)).sum::<f64>() / good_psnr.len() as f64);
    if let Some(t) = &options.thresholds {
        let mut counts = [0u64; 3];
        for row in &rows {
            match (row.score >= t.image, row.label == 1) {
                (true, true) => counts[0] += 1,
                (true, false) => counts[1] += 1,
                (false, true) => counts[2] += 1,
                (false, false) => {}
            }
        }
        metrics.at_thresholds = Some(ThresholdedMetrics {
            image: Decisions::from_counts(t.image, counts[0], counts[1], counts[2]),
            pixel: masked.then(|| {
                Decisions::from_counts(t.pixel, pixel_counts[0], pixel_counts[1], pixel_counts[2])
            }),
        });
    }
    let scores_csv = out.join("scores.csv");
    write_scores_csv(&scores_csv, &rows)?;
    let metrics_json = out.join("metrics.json");
    metrics.write_json(&metrics_json)?;
    Ok(EvalOutput {
        metrics,
        metrics_json,
        scores_csv,
        anomaly_maps_dir: maps_dir,
        overlays_dir,
        seconds_per_image: model_seconds / class.test.len() as f64,
    })
}

fn load_test(sample: &TestSample, size: usize) -> Result<(RgbImage, Mask, (u32, u32))> {
    let dims = image::image_dimensions(&sample.image).map_err(|source| Error::UnreadableImage {
        path: sample.image.clone(),
        source,
    })?;
    let (image, mask) = sample.load(size)?;
    Ok((image, mask, dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_map_keeps_constants_and_size() {
        let map = AnomalyMap::finite(2, 2, vec![0.25; 4]).unwrap();
        let big = resize_map(&map, 6, 4).unwrap();
        assert_eq!((big.height(), big.width()), (6, 4));
        assert!(big.as_slice().iter().all(|&v| (v - 0.25).abs() < 1e-6));
        assert_eq!(resize_map(&map, 2, 2).unwrap(), map);
    }
}
