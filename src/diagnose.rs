//! Where the quality goes, stage by stage (issue 15, `docs/reference.md` §5):
//! the paper's own diagnostics (Sec. 4.2, PSNR inside and outside the
//! anomaly mask) applied to each frozen stage of a trained run.
//!
//! | stage | measure | reads as |
//! |---|---|---|
//! | VAE | PSNR of `D(E(x))` against `x`, good test and training images | the ceiling every later stage works under; train >> test = over-fitting |
//! | LDM | PSNR of `x_r` against `x`, good test images | what the reverse process adds to the VAE's error |
//! | LDM | synthetic anomalies: PSNR of `x_a` against `x` inside `M` | how strong the pasted defect is (the starting point) |
//! | LDM | PSNR of `x_r` against the defect-free `x` inside `M` | higher = the defect was removed |
//! | LDM | PSNR of `x_r` against `x` outside `M` | higher = normal regions kept |
//! | LDM | PSNR of `x_a` against `x_r` inside `M` (synthetic, and real ground-truth masks) | the paper's "direct copy": higher = worse |
//! | segmenter | pixel AUROC / AP, image AUROC on synthetic versus real defects | a gap = the segmenter learned DRAEM's anomalies, not defects |
//!
//! The synthetic anomalies are the threshold calibration's
//! ([`Config::validation_synthesizer`](crate::Config::validation_synthesizer),
//! every sample anomalous) on copies of the good test images: anomaly `i`
//! is drawn from the stream `(epoch 0, index i)` on good image `i mod n`, so
//! a diagnosis does not depend on batching. Both segmenter scores use the
//! same negatives (the good test images), so synthetic and real differ only
//! in their defects. Every per-image PSNR is capped at [`PSNR_CAP_DB`]
//! (an exact copy has an infinite PSNR; JSON has no infinity), as
//! [`crate::eval`] does, and averaged in dB.

use std::fmt;
use std::path::Path;

use diffad_metrics::classification_metrics;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{load_images, Mask, MvtecClass, RgbImage};
use crate::error::{Error, Result};
use crate::model::{Analysis, DiffAd};

/// The file [`Diagnosis::write_json`] is given by the CLI (`<out>/diagnosis.json`).
pub const DIAGNOSIS_FILE: &str = "diagnosis.json";

/// The cap of every per-image PSNR (dB), as in [`crate::eval`].
pub const PSNR_CAP_DB: f64 = 100.0;

/// How much a diagnosis measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagnoseOptions {
    /// Synthetic anomalies `n`, pasted on copies of the good test images in turn.
    pub synthetic: usize,
    /// Training images (`train/good`, the held-out threshold images excluded)
    /// whose VAE round trip is measured; 0 skips them.
    pub max_train: usize,
}

impl Default for DiagnoseOptions {
    fn default() -> Self {
        Self {
            synthetic: 16,
            max_train: 16,
        }
    }
}

/// The first stage alone: `D(E(x))` against `x` (mean dB).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeDiagnosis {
    /// Good test images measured.
    pub test_good_images: usize,
    /// Mean PSNR on the good test images (held out from training).
    pub test_good_psnr: f64,
    /// Training images measured.
    pub train_images: usize,
    /// Mean PSNR on the training images; none if none were measured.
    pub train_psnr: Option<f64>,
}

/// The reconstruction `x_r` of the whole first two stages (mean dB).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LdmDiagnosis {
    /// PSNR of `x_r` against `x` on the good test images.
    pub good_psnr: f64,
    /// Synthetic anomalies measured.
    pub synthetic_images: usize,
    /// PSNR of `x_a` against the defect-free `x` inside `M`: the strength of
    /// the pasted defect, the level `removed_inside_psnr` starts from.
    pub anomaly_inside_psnr: f64,
    /// PSNR of `x_r` against the defect-free `x` inside `M` (higher = the
    /// defect was removed).
    pub removed_inside_psnr: f64,
    /// PSNR of `x_r` against `x` outside `M` (higher = normal regions kept).
    pub kept_outside_psnr: f64,
    /// PSNR of `x_a` against `x_r` inside `M`, the paper's "direct copy"
    /// (higher = worse).
    pub copied_inside_psnr: f64,
    /// Real defects: PSNR of `x_a` against `x_r` inside the ground-truth
    /// masks (higher = worse); none without masked defective test images.
    pub real_copied_inside_psnr: Option<f64>,
    /// Real defects: PSNR of `x_a` against `x_r` outside the ground-truth
    /// masks, the reconstruction's noise floor on those images: a defect
    /// stands out in the residual only if `real_copied_inside_psnr` is well
    /// below it.
    pub real_outside_psnr: Option<f64>,
}

/// The segmenter's accuracy on one set of anomalies (with the good test
/// images as the normal images).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegScores {
    /// Pixel AUROC.
    pub pixel_auroc: f64,
    /// Pixel average precision.
    pub pixel_ap: f64,
    /// Image AUROC of the image score `max(avg_pool(map, k))`.
    pub image_auroc: f64,
}

/// The segmenter on synthetic versus real defects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmenterDiagnosis {
    /// On the synthetic anomalies.
    pub synthetic: SegScores,
    /// On the real defects of the test split; none without masked defects.
    pub real: Option<SegScores>,
}

/// One real defect kind (`test/<defect>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefectDiagnosis {
    /// The defect folder's name.
    pub defect: String,
    /// Its test images.
    pub images: usize,
    /// PSNR of `x_a` against `x_r` inside its masks ("direct copy", higher =
    /// worse); none if every mask is empty.
    pub copied_inside_psnr: Option<f64>,
    /// PSNR of `x_a` against `x_r` outside its masks (the noise floor).
    pub outside_psnr: Option<f64>,
    /// The segmenter on this kind alone (against the good test images).
    pub scores: SegScores,
}

/// The per-stage diagnosis of a trained run on one class (`diagnosis.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The class name.
    pub class: String,
    /// The VAE.
    pub vae: VaeDiagnosis,
    /// The reconstruction (VAE and LDM).
    pub ldm: LdmDiagnosis,
    /// The segmenter.
    pub segmenter: SegmenterDiagnosis,
    /// Real defects, kind by kind (sorted by name).
    pub real_defects: Vec<DefectDiagnosis>,
}

impl Diagnosis {
    /// Writes the diagnosis as pretty JSON, atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        crate::io::write_atomic(path, json.as_bytes())
    }

    /// Reads a diagnosis written by [`Diagnosis::write_json`].
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Per-element flags of an HWC image from a per-pixel mask: `inside`
/// selects the pixels with `M > 0.5`, else the others.
fn element_flags(image: &RgbImage, mask: &Mask, inside: bool) -> Result<Vec<bool>> {
    if (mask.height(), mask.width()) != (image.height(), image.width()) {
        return Err(Error::Shape(format!(
            "mask is {}x{} but the image is {}x{}",
            mask.width(),
            mask.height(),
            image.width(),
            image.height()
        )));
    }
    let channels = image.as_hwc().len() / mask.as_slice().len().max(1);
    Ok(mask
        .as_slice()
        .iter()
        .flat_map(|&m| std::iter::repeat_n((m > 0.5) == inside, channels))
        .collect())
}

fn masked_psnr(a: &RgbImage, b: &RgbImage, mask: &Mask, inside: bool) -> Result<Option<f64>> {
    let flags = element_flags(a, mask, inside)?;
    if !flags.contains(&true) {
        return Ok(None);
    }
    let db = diffad_metrics::psnr(a.as_hwc(), b.as_hwc(), &flags)?;
    Ok(Some(db.min(PSNR_CAP_DB)))
}

/// PSNR (dB, capped at [`PSNR_CAP_DB`]) of `a` against `b` over the pixels
/// inside `mask` (`M > 0.5`), every channel; none if the mask is empty.
/// Errors: sizes that differ, a non-finite value.
pub fn psnr_inside(a: &RgbImage, b: &RgbImage, mask: &Mask) -> Result<Option<f64>> {
    masked_psnr(a, b, mask, true)
}

/// [`psnr_inside`] over the pixels outside `mask`; none if it covers every pixel.
pub fn psnr_outside(a: &RgbImage, b: &RgbImage, mask: &Mask) -> Result<Option<f64>> {
    masked_psnr(a, b, mask, false)
}

/// PSNR (dB, capped at [`PSNR_CAP_DB`]) of `a` against `b` over every pixel.
pub fn psnr_full(a: &RgbImage, b: &RgbImage) -> Result<f64> {
    let all = vec![true; a.as_hwc().len()];
    Ok(diffad_metrics::psnr(a.as_hwc(), b.as_hwc(), &all)?.min(PSNR_CAP_DB))
}

/// The mean of the defined values; none if there is none.
fn mean(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .flatten()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// One anomalous image with its mask, analysed.
struct Scored<'a> {
    mask: &'a Mask,
    analysis: &'a Analysis,
}

/// The segmenter's scores on `anomalous` against the good images `normal`
/// (every pixel of a good image is normal).
fn seg_scores(normal: &[&Analysis], anomalous: &[Scored<'_>]) -> Result<SegScores> {
    let mut pixel_scores = Vec::new();
    let mut pixel_labels = Vec::new();
    let mut image_scores = Vec::new();
    let mut image_labels = Vec::new();
    for a in normal {
        let map = a.prediction.map.as_slice();
        pixel_scores.extend_from_slice(map);
        pixel_labels.extend(std::iter::repeat_n(false, map.len()));
        image_scores.push(a.prediction.score);
        image_labels.push(false);
    }
    for s in anomalous {
        let map = s.analysis.prediction.map.as_slice();
        pixel_scores.extend_from_slice(map);
        pixel_labels.extend(s.mask.as_slice().iter().map(|&m| m > 0.5));
        image_scores.push(s.analysis.prediction.score);
        image_labels.push(s.mask.as_slice().iter().any(|&m| m > 0.5));
    }
    let pixel = classification_metrics(&pixel_scores, &pixel_labels)?;
    let image = classification_metrics(&image_scores, &image_labels)?;
    Ok(SegScores {
        pixel_auroc: pixel.auroc,
        pixel_ap: pixel.average_precision,
        image_auroc: image.auroc,
    })
}

/// Diagnoses `model` on `class`: its good test images (required), copies of
/// them with `options.synthetic` synthetic anomalies, its training images
/// (`train/good`, as the run was trained on: the images
/// [`crate::train::validation_indices`] held out are skipped) and its real
/// defects (when they have masks).
///
/// Errors: no good test image or no synthetic anomaly ([`Error::Layout`],
/// [`Error::Shape`]), unreadable images, and the model's errors.
pub fn diagnose(
    model: &DiffAd,
    class: &MvtecClass,
    options: &DiagnoseOptions,
) -> Result<Diagnosis> {
    let config = model.config();
    let size = config.data.image_size;
    let good_samples: Vec<_> = class.test.iter().filter(|s| !s.is_anomalous()).collect();
    if good_samples.is_empty() {
        return Err(Error::Layout {
            path: class.root.join("test").join(crate::data::GOOD),
            reason: "the diagnosis needs good test images".into(),
        });
    }
    if options.synthetic == 0 {
        return Err(Error::Shape(
            "the diagnosis needs at least one synthetic anomaly".into(),
        ));
    }
    let good: Vec<RgbImage> = good_samples
        .par_iter()
        .map(|s| s.load(size).map(|(image, _)| image))
        .collect::<Result<_>>()?;

    // VAE: D(E(x)) on the good test images and on the fitted training images.
    let vae_good = model.vae_round_trip(&good)?;
    let test_good_psnr = mean(
        good.iter()
            .zip(&vae_good)
            .map(|(x, y)| psnr_full(x, y).map(Some))
            .collect::<Result<Vec<_>>>()?,
    )
    .unwrap_or(f64::NAN);
    let held = crate::train::validation_indices(config, class.train.len()).unwrap_or_default();
    let train_paths: Vec<_> = class
        .train
        .iter()
        .enumerate()
        .filter(|(i, _)| held.binary_search(i).is_err())
        .map(|(_, p)| p.clone())
        .take(options.max_train)
        .collect();
    let train = load_images(&train_paths, size)?;
    let vae_train = model.vae_round_trip(&train)?;
    let train_psnr = mean(
        train
            .iter()
            .zip(&vae_train)
            .map(|(x, y)| psnr_full(x, y).map(Some))
            .collect::<Result<Vec<_>>>()?,
    );

    // Synthetic anomalies on copies of the good test images, one stream each.
    let synth = config.validation_synthesizer()?;
    let samples = (0..options.synthetic)
        .into_par_iter()
        .map(|i| synth.synthesize_indexed(&good[i % good.len()], None, 0, i as u64))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if !samples
        .iter()
        .any(|s| s.mask.as_slice().iter().any(|&m| m > 0.5))
    {
        return Err(Error::Shape(
            "diagnosis: no synthetic anomaly was drawn".into(),
        ));
    }

    // Real defects with their ground truth.
    let masked = class.has_masks();
    let defective: Vec<_> = class
        .test
        .iter()
        .filter(|s| masked && s.is_anomalous())
        .collect();
    let real: Vec<(RgbImage, Mask)> = defective
        .par_iter()
        .map(|s| s.load(size))
        .collect::<Result<_>>()?;

    // One pass of the whole model over every image.
    let mut inputs = good.clone();
    inputs.extend(samples.iter().map(|s| s.augmented.clone()));
    inputs.extend(real.iter().map(|(x, _)| x.clone()));
    let analyses = model.analyse_batch(&inputs)?;
    let (good_a, rest) = analyses.split_at(good.len());
    let (synth_a, real_a) = rest.split_at(samples.len());

    let good_psnr = mean(
        good.iter()
            .zip(good_a)
            .map(|(x, a)| psnr_full(x, &a.reconstruction).map(Some))
            .collect::<Result<Vec<_>>>()?,
    )
    .unwrap_or(f64::NAN);
    let per_synthetic = |f: &dyn Fn(&diffad_synth::Sample, &Analysis) -> Result<Option<f64>>| {
        let values = samples
            .iter()
            .zip(synth_a)
            .map(|(s, a)| f(s, a))
            .collect::<Result<Vec<_>>>()?;
        mean(values)
            .ok_or_else(|| Error::Shape("diagnosis: every synthetic mask is empty or full".into()))
    };
    let anomaly_inside_psnr = per_synthetic(&|s, _| psnr_inside(&s.augmented, &s.normal, &s.mask))?;
    let removed_inside_psnr =
        per_synthetic(&|s, a| psnr_inside(&a.reconstruction, &s.normal, &s.mask))?;
    let kept_outside_psnr =
        per_synthetic(&|s, a| psnr_outside(&a.reconstruction, &s.normal, &s.mask))?;
    let copied_inside_psnr =
        per_synthetic(&|s, a| psnr_inside(&s.augmented, &a.reconstruction, &s.mask))?;
    let real_copied: Vec<Option<f64>> = real
        .iter()
        .zip(real_a)
        .map(|((x, m), a)| psnr_inside(x, &a.reconstruction, m))
        .collect::<Result<_>>()?;
    let real_outside: Vec<Option<f64>> = real
        .iter()
        .zip(real_a)
        .map(|((x, m), a)| psnr_outside(x, &a.reconstruction, m))
        .collect::<Result<_>>()?;

    let normal: Vec<&Analysis> = good_a.iter().collect();
    let synthetic_scored: Vec<Scored<'_>> = samples
        .iter()
        .zip(synth_a)
        .map(|(s, analysis)| Scored {
            mask: &s.mask,
            analysis,
        })
        .collect();
    let real_scored: Vec<Scored<'_>> = real
        .iter()
        .zip(real_a)
        .map(|((_, mask), analysis)| Scored { mask, analysis })
        .collect();
    let real_any = real_scored
        .iter()
        .any(|s| s.mask.as_slice().iter().any(|&m| m > 0.5));

    let mut real_defects = Vec::new();
    if real_any {
        let mut kinds: Vec<&str> = defective.iter().map(|s| s.defect.as_str()).collect();
        kinds.dedup();
        for kind in kinds {
            let picked: Vec<usize> = (0..defective.len())
                .filter(|&i| defective[i].defect == kind)
                .collect();
            let scored: Vec<Scored<'_>> = picked
                .iter()
                .map(|&i| Scored {
                    mask: real_scored[i].mask,
                    analysis: real_scored[i].analysis,
                })
                .collect();
            if !scored
                .iter()
                .any(|s| s.mask.as_slice().iter().any(|&m| m > 0.5))
            {
                continue;
            }
            real_defects.push(DefectDiagnosis {
                defect: kind.to_string(),
                images: picked.len(),
                copied_inside_psnr: mean(picked.iter().map(|&i| real_copied[i])),
                outside_psnr: mean(picked.iter().map(|&i| real_outside[i])),
                scores: seg_scores(&normal, &scored)?,
            });
        }
    }

    Ok(Diagnosis {
        class: class.name.clone(),
        vae: VaeDiagnosis {
            test_good_images: good.len(),
            test_good_psnr,
            train_images: train.len(),
            train_psnr,
        },
        ldm: LdmDiagnosis {
            good_psnr,
            synthetic_images: samples.len(),
            anomaly_inside_psnr,
            removed_inside_psnr,
            kept_outside_psnr,
            copied_inside_psnr,
            real_copied_inside_psnr: mean(real_copied),
            real_outside_psnr: mean(real_outside),
        },
        segmenter: SegmenterDiagnosis {
            synthetic: seg_scores(&normal, &synthetic_scored)?,
            real: if real_any {
                Some(seg_scores(&normal, &real_scored)?)
            } else {
                None
            },
        },
        real_defects,
    })
}

fn db(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

impl fmt::Display for SegScores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pixel AUROC {:.3}  pixel AP {:.3}  image AUROC {:.3}",
            self.pixel_auroc, self.pixel_ap, self.image_auroc
        )
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (v, l, s) = (&self.vae, &self.ldm, &self.segmenter);
        writeln!(
            f,
            "diagnosis of `{}` ({} good test, {} training, {} synthetic images)",
            self.class, v.test_good_images, v.train_images, l.synthetic_images
        )?;
        let rows = [
            (
                "VAE",
                "PSNR D(E(x)) vs x, good test",
                db(Some(v.test_good_psnr)),
            ),
            ("VAE", "PSNR D(E(x)) vs x, training", db(v.train_psnr)),
            ("LDM", "PSNR x_r vs x, good test", db(Some(l.good_psnr))),
            (
                "LDM",
                "synthetic: PSNR x_a vs x in M (defect)",
                db(Some(l.anomaly_inside_psnr)),
            ),
            (
                "LDM",
                "synthetic: PSNR x_r vs x in M (removed, up)",
                db(Some(l.removed_inside_psnr)),
            ),
            (
                "LDM",
                "synthetic: PSNR x_r vs x out of M (kept, up)",
                db(Some(l.kept_outside_psnr)),
            ),
            (
                "LDM",
                "synthetic: PSNR x_a vs x_r in M (copied, down)",
                db(Some(l.copied_inside_psnr)),
            ),
            (
                "LDM",
                "real: PSNR x_a vs x_r in M (copied, down)",
                db(l.real_copied_inside_psnr),
            ),
            (
                "LDM",
                "real: PSNR x_a vs x_r out of M (noise floor)",
                db(l.real_outside_psnr),
            ),
        ];
        writeln!(f, "{:<10} {:<48} {:>8}", "stage", "measure", "dB")?;
        for (stage, measure, value) in &rows {
            writeln!(f, "{stage:<10} {measure:<48} {value:>8}")?;
        }
        writeln!(f, "{:<10} {:<11} {}", "segmenter", "synthetic", s.synthetic)?;
        match &s.real {
            Some(r) => writeln!(f, "{:<10} {:<11} {r}", "segmenter", "real")?,
            None => writeln!(
                f,
                "{:<10} {:<11} - (no masked defects)",
                "segmenter", "real"
            )?,
        }
        for d in &self.real_defects {
            writeln!(
                f,
                "  {:<18} {:>3} images  copied {:>6} dB (floor {:>6})  {}",
                d.defect,
                d.images,
                db(d.copied_inside_psnr),
                db(d.outside_psnr),
                d.scores
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(values: impl Fn(usize) -> f32) -> RgbImage {
        RgbImage::from_hwc(4, 4, (0..48).map(values).collect()).unwrap()
    }

    fn left_half() -> Mask {
        Mask::from_bool(4, 4, &(0..16).map(|p| p % 4 < 2).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn masked_psnr_reads_only_its_side_of_the_mask() {
        let x = image(|_| 0.5);
        // 0.1 off on the left half (inside), exact on the right half.
        let y = image(|i| if (i / 3) % 4 < 2 { 0.6 } else { 0.5 });
        let inside = psnr_inside(&x, &y, &left_half()).unwrap().unwrap();
        assert!((inside - 20.0).abs() < 1e-4, "{inside}");
        assert_eq!(
            psnr_outside(&x, &y, &left_half()).unwrap(),
            Some(PSNR_CAP_DB)
        );
        // Over the whole image the MSE halves: +3.01 dB.
        let full = psnr_full(&x, &y).unwrap();
        assert!((full - 23.0103).abs() < 1e-3, "{full}");
    }

    #[test]
    fn empty_sides_are_none_and_sizes_must_match() {
        let x = image(|i| i as f32 / 48.0);
        let none = Mask::zeros(4, 4).unwrap();
        assert_eq!(psnr_inside(&x, &x, &none).unwrap(), None);
        let all = Mask::filled(4, 4, 1.0).unwrap();
        assert_eq!(psnr_outside(&x, &x, &all).unwrap(), None);
        assert!(psnr_inside(&x, &x, &Mask::zeros(2, 2).unwrap()).is_err());
    }

    #[test]
    fn mean_skips_undefined_values() {
        assert_eq!(mean([Some(10.0), None, Some(20.0)]), Some(15.0));
        assert_eq!(mean([None]), None);
    }
}
