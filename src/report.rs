//! Evaluation outputs: `metrics.json`, `scores.csv`, float32 TIFF anomaly
//! maps in the layout the MVTec AD evaluation script reads
//! (`<anomaly_maps>/<class>/test/<defect>/<stem>.tiff`) and PNG heat-map
//! overlays. Every file is written atomically (temp file + rename).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Plane, RgbImage};
use crate::error::{Error, Result};
use crate::io::{save_png, write_atomic, write_atomic_with};

/// A per-pixel anomaly map `(H, W)`: the probability of the anomalous class
/// (softmax channel 1 of the segmenter, `docs/reference.md` §5). It is a
/// [`Plane`] built with [`Plane::finite`], so it holds no NaN or infinity.
pub type AnomalyMap = Plane;

/// One row of `scores.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// The test image.
    pub path: PathBuf,
    /// Its defect type (`good` = normal).
    pub defect: String,
    /// 1 = anomalous, 0 = normal.
    pub label: u8,
    /// The image score `max(avg_pool(map, k))`.
    pub score: f32,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes `scores.csv` (header `path,defect,label,score`) atomically.
pub fn write_scores_csv(path: &Path, rows: &[ScoreRow]) -> Result<()> {
    let mut text = String::from("path,defect,label,score\n");
    for r in rows {
        let _ = writeln!(
            text,
            "{},{},{},{}",
            csv_field(&r.path.to_string_lossy()),
            csv_field(&r.defect),
            r.label,
            r.score
        );
    }
    write_atomic(path, text.as_bytes())
}

/// The summary written to `metrics.json`: headline numbers first, then the
/// full report of [`diffad_metrics::Report`] (per defect type). A test set
/// without ground-truth masks has image-level numbers only: the pixel ones
/// are `None` (`null` in the JSON) and [`Metrics::image_report`] holds the
/// per-defect image metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The class evaluated.
    pub class: String,
    /// Test images.
    pub images: usize,
    /// Image-level AUROC.
    pub image_auroc: f64,
    /// Image-level F1-max.
    pub image_f1_max: f64,
    /// Pixel-level AUROC over all pooled pixels (needs masks).
    pub pixel_auroc: Option<f64>,
    /// Pixel-level average precision (needs masks).
    pub pixel_ap: Option<f64>,
    /// AU-PRO up to FPR 0.3, normalised (needs masks).
    pub aupro: Option<f64>,
    /// Pixel-level F1-max (needs masks).
    pub pixel_f1_max: Option<f64>,
    /// Mean PSNR (dB) between the good test images and their reconstructions
    /// `x_r`: how well the VAE + LDM reproduce normal surfaces (higher is
    /// better). `None` without good test images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruction_psnr: Option<f64>,
    /// Precision, recall and F1 of the run's stored thresholds on the test
    /// set, beside the oracle F1-max above; `None` for a run without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_thresholds: Option<ThresholdedMetrics>,
    /// Everything, per defect type (needs masks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<diffad_metrics::Report>,
    /// The per-defect image metrics of a test set without masks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_report: Option<diffad_metrics::ImageReport>,
}

impl Metrics {
    /// Headline numbers of a report.
    pub fn new(class: &str, report: diffad_metrics::Report) -> Self {
        Self {
            class: class.to_owned(),
            images: report.image.images,
            image_auroc: report.image.auroc,
            image_f1_max: report.image.f1_max.f1,
            pixel_auroc: Some(report.pixel.auroc),
            pixel_ap: Some(report.pixel.average_precision),
            aupro: Some(report.pixel.aupro),
            pixel_f1_max: Some(report.pixel.f1_max.f1),
            reconstruction_psnr: None,
            at_thresholds: None,
            report: Some(report),
            image_report: None,
        }
    }

    /// Image-level numbers only, for a test set without ground-truth masks.
    pub fn image_only(class: &str, report: diffad_metrics::ImageReport) -> Self {
        Self {
            class: class.to_owned(),
            images: report.images,
            image_auroc: report.auroc,
            image_f1_max: report.f1_max.f1,
            pixel_auroc: None,
            pixel_ap: None,
            aupro: None,
            pixel_f1_max: None,
            reconstruction_psnr: None,
            at_thresholds: None,
            report: None,
            image_report: Some(report),
        }
    }

    /// One line of headline numbers in percent (`-` where a value needs
    /// masks the test set does not have).
    pub fn headline(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
        format!(
            "class {}: image AUROC {:.1}  pixel AUROC {}  pixel AP {}  AU-PRO {}  pixel F1-max {}",
            self.class,
            100.0 * self.image_auroc,
            pct(self.pixel_auroc),
            pct(self.pixel_ap),
            pct(self.aupro),
            pct(self.pixel_f1_max),
        )
    }

    /// Writes pretty JSON atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        write_atomic(path, json.as_bytes())
    }

    /// Reads a `metrics.json`.
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Precision, recall and F1 of one decision rule (`score >= threshold`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decisions {
    /// The threshold.
    pub threshold: f32,
    /// `TP / (TP + FP)` (1 when nothing is predicted anomalous).
    pub precision: f64,
    /// `TP / (TP + FN)` (1 when nothing is anomalous).
    pub recall: f64,
    /// `2 TP / (2 TP + FP + FN)`.
    pub f1: f64,
}

impl Decisions {
    /// The rates of the counts `tp`, `fp`, `fn_` at `threshold`.
    pub fn from_counts(threshold: f32, tp: u64, fp: u64, fn_: u64) -> Self {
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                1.0
            } else {
                num as f64 / den as f64
            }
        };
        Self {
            threshold,
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
        }
    }
}

/// The stored thresholds' decisions on a test set, per image and per pixel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdedMetrics {
    /// Image-level decisions.
    pub image: Decisions,
    /// Pixel-level decisions, over all pooled pixels (needs masks).
    pub pixel: Option<Decisions>,
}

impl std::fmt::Display for Metrics {
    /// The per-defect table of [`diffad_metrics::Report`], or, without
    /// masks, the image-level one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(report) = &self.report {
            return write!(f, "{report}");
        }
        writeln!(
            f,
            "{:<20} {:>7} {:>8} {:>8}",
            "defect type", "images", "I-AUROC", "I-AP"
        )?;
        if let Some(r) = &self.image_report {
            writeln!(
                f,
                "{:<20} {:>7} {:>8.2} {:>8.2}",
                "(all)",
                r.images,
                100.0 * r.auroc,
                100.0 * r.average_precision
            )?;
            for (defect, d) in &r.per_defect {
                let pct =
                    |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}", 100.0 * v));
                writeln!(
                    f,
                    "{:<20} {:>7} {:>8} {:>8}",
                    defect,
                    d.images,
                    pct(d.auroc),
                    pct(d.average_precision)
                )?;
            }
        }
        write!(
            f,
            "no ground-truth masks: pixel metrics need `ground_truth/<defect>/<stem>_mask.png`"
        )
    }
}

/// Where the MVTec AD evaluation script expects the map of a test image:
/// `<maps_dir>/<class>/test/<defect>/<stem>.tiff`.
pub fn mvtec_map_path(maps_dir: &Path, class: &str, defect: &str, stem: &str) -> PathBuf {
    maps_dir
        .join(class)
        .join("test")
        .join(defect)
        .join(format!("{stem}.tiff"))
}

/// Writes a single-channel float32 TIFF atomically.
pub fn write_tiff(path: &Path, map: &AnomalyMap) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let file = fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let tiff_err = |source| Error::Tiff {
            path: path.to_path_buf(),
            source,
        };
        let mut encoder =
            tiff::encoder::TiffEncoder::new(std::io::BufWriter::new(file)).map_err(tiff_err)?;
        encoder
            .write_image::<tiff::encoder::colortype::Gray32Float>(
                map.width() as u32,
                map.height() as u32,
                map.as_slice(),
            )
            .map_err(tiff_err)
    })
}

/// Reads a single-channel float32 TIFF (as written by [`write_tiff`]).
pub fn read_tiff(path: &Path) -> Result<AnomalyMap> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let tiff_err = |source| Error::Tiff {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder =
        tiff::decoder::Decoder::new(std::io::BufReader::new(file)).map_err(tiff_err)?;
    let (w, h) = decoder.dimensions().map_err(tiff_err)?;
    match decoder.read_image().map_err(tiff_err)? {
        tiff::decoder::DecodingResult::F32(data) => {
            Ok(AnomalyMap::finite(h as usize, w as usize, data)?)
        }
        _ => Err(Error::Shape(format!(
            "{}: not a float32 TIFF",
            path.display()
        ))),
    }
}

/// The jet colour map (blue 0 -> cyan -> yellow -> red 1), as OpenCV's
/// `COLORMAP_JET` used by DRAEM's visualisations.
pub fn jet(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    let ramp = |x: f32| (1.5 - (4.0 * v - x).abs()).clamp(0.0, 1.0);
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// A heat-map overlay: `0.5 * image + 0.5 * jet(map)`, side by side with the
/// input image; the map is shown on its absolute `[0, 1]` scale so a clean
/// image stays blue.
pub fn overlay(image: &RgbImage, map: &AnomalyMap) -> Result<image::RgbImage> {
    if (image.height(), image.width()) != (map.height(), map.width()) {
        return Err(Error::Shape(format!(
            "overlay: image {}x{} and map {}x{} differ",
            image.height(),
            image.width(),
            map.height(),
            map.width()
        )));
    }
    let (h, w) = (map.height(), map.width());
    let (pixels, values) = (image.view(), map.view());
    let mut out = image::RgbImage::new(2 * w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let heat = jet(values[[y, x]]);
            let mut left = [0u8; 3];
            let mut right = [0u8; 3];
            for c in 0..3 {
                let v = pixels[[y, x, c]].clamp(0.0, 1.0);
                left[c] = (v * 255.0).round() as u8;
                right[c] = ((0.5 * v + 0.5 * heat[c]) * 255.0).round() as u8;
            }
            out.put_pixel(x as u32, y as u32, image::Rgb(left));
            out.put_pixel((w + x) as u32, y as u32, image::Rgb(right));
        }
    }
    Ok(out)
}

/// The diagnosis panel of one test image, five tiles side by side: the input
/// `x_a`, the reconstruction `x_r`, the segmenter's middle input (`x_inter`;
/// grey when the variant has none), the anomaly map as a heat map over the
/// input (as [`overlay`]) and the ground truth (white = anomalous). A defect
/// still visible in `x_r` points at the LDM, a clean `x_r` with a dark map at
/// the segmenter.
pub fn panel(
    input: &RgbImage,
    reconstruction: &RgbImage,
    middle: Option<&RgbImage>,
    map: &AnomalyMap,
    ground_truth: &Plane,
) -> Result<image::RgbImage> {
    let (h, w) = (map.height(), map.width());
    let same = |name: &str, hh: usize, ww: usize| {
        if (hh, ww) == (h, w) {
            Ok(())
        } else {
            Err(Error::Shape(format!(
                "panel: {name} is {hh}x{ww} but the map is {h}x{w}"
            )))
        }
    };
    same("input", input.height(), input.width())?;
    same(
        "reconstruction",
        reconstruction.height(),
        reconstruction.width(),
    )?;
    if let Some(m) = middle {
        same("middle input", m.height(), m.width())?;
    }
    same("ground truth", ground_truth.height(), ground_truth.width())?;
    let heat = overlay(input, map)?;
    let mut out = image::RgbImage::new(5 * w as u32, h as u32);
    let tiles = [
        Some(input.to_rgb8()),
        Some(reconstruction.to_rgb8()),
        middle.map(RgbImage::to_rgb8),
    ];
    for (k, tile) in tiles.iter().enumerate() {
        for y in 0..h as u32 {
            for x in 0..w as u32 {
                let px = tile
                    .as_ref()
                    .map_or(image::Rgb([128, 128, 128]), |t| *t.get_pixel(x, y));
                out.put_pixel(k as u32 * w as u32 + x, y, px);
            }
        }
    }
    let truth = ground_truth.view();
    for y in 0..h {
        for x in 0..w {
            out.put_pixel(
                (3 * w + x) as u32,
                y as u32,
                *heat.get_pixel((w + x) as u32, y as u32),
            );
            let v = if truth[[y, x]] > 0.5 { 255 } else { 0 };
            out.put_pixel((4 * w + x) as u32, y as u32, image::Rgb([v, v, v]));
        }
    }
    Ok(out)
}

/// Writes [`panel`] as a PNG atomically.
pub fn write_panel(
    path: &Path,
    input: &RgbImage,
    reconstruction: &RgbImage,
    middle: Option<&RgbImage>,
    map: &AnomalyMap,
    ground_truth: &Plane,
) -> Result<()> {
    let img = panel(input, reconstruction, middle, map, ground_truth)?;
    save_png(path, &image::DynamicImage::from(img))
}

/// Writes [`overlay`] as a PNG atomically.
pub fn write_overlay(path: &Path, image: &RgbImage, map: &AnomalyMap) -> Result<()> {
    let img = image::DynamicImage::from(overlay(image, map)?);
    save_png(path, &img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiff_round_trip_is_exact_float32() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..12).map(|i| i as f32 / 7.0 - 0.3).collect();
        let map = AnomalyMap::finite(3, 4, data).unwrap();
        let path = mvtec_map_path(dir.path(), "bottle", "crack", "000");
        assert!(path.ends_with("bottle/test/crack/000.tiff"));
        write_tiff(&path, &map).unwrap();
        assert!(!crate::io::temp_path(&path).exists());
        assert_eq!(read_tiff(&path).unwrap(), map);
    }

    #[test]
    fn scores_csv_has_one_quoted_row_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.csv");
        let rows = vec![
            ScoreRow {
                path: "a/000.png".into(),
                defect: "good".into(),
                label: 0,
                score: 0.25,
            },
            ScoreRow {
                path: "b,c/001.png".into(),
                defect: "crack".into(),
                label: 1,
                score: 0.5,
            },
        ];
        write_scores_csv(&path, &rows).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "path,defect,label,score\na/000.png,good,0,0.25\n\"b,c/001.png\",crack,1,0.5\n"
        );
    }

    #[test]
    fn jet_endpoints_and_overlay_layout() {
        assert_eq!(jet(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(jet(1.0), [0.5, 0.0, 0.0]);
        assert_eq!(jet(0.5), [0.5, 1.0, 0.5]);
        let img = RgbImage::zeros(2, 3).unwrap();
        let map = AnomalyMap::finite(2, 3, vec![1.0; 6]).unwrap();
        let o = overlay(&img, &map).unwrap();
        assert_eq!(o.dimensions(), (6, 2));
        assert_eq!(o.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(o.get_pixel(4, 1).0, [64, 0, 0]);
        assert!(overlay(&RgbImage::zeros(3, 3).unwrap(), &map).is_err());
        assert!(AnomalyMap::finite(1, 2, vec![0.0, f32::NAN]).is_err());
    }

    #[test]
    fn panel_lays_out_five_tiles() {
        let mut input = RgbImage::zeros(2, 3).unwrap();
        input.view_mut()[[0, 0, 0]] = 1.0;
        let rec = RgbImage::filled(2, 3, [0.0, 1.0, 0.0]).unwrap();
        let map = AnomalyMap::finite(2, 3, vec![0.0; 6]).unwrap();
        let truth = Plane::from_bool(2, 3, &[true, false, false, false, false, false]).unwrap();
        let p = panel(&input, &rec, None, &map, &truth).unwrap();
        assert_eq!(p.dimensions(), (15, 2));
        assert_eq!(p.get_pixel(0, 0).0, [255, 0, 0]); // x_a
        assert_eq!(p.get_pixel(3, 0).0, [0, 255, 0]); // x_r
        assert_eq!(p.get_pixel(6, 1).0, [128, 128, 128]); // no middle input
        assert_eq!(
            p.get_pixel(9, 1).0,
            overlay(&input, &map).unwrap().get_pixel(3, 1).0
        );
        assert_eq!(p.get_pixel(12, 0).0, [255, 255, 255]); // ground truth
        assert_eq!(p.get_pixel(13, 0).0, [0, 0, 0]);
        let small = AnomalyMap::finite(1, 3, vec![0.0; 3]).unwrap();
        assert!(panel(&input, &rec, None, &small, &truth).is_err());
    }

    #[test]
    fn metrics_json_round_trip_with_headline_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut eval = diffad_metrics::Evaluator::with_options(1, 0.3).unwrap();
        let mask = vec![true, false, false, false];
        eval.add("crack", &[0.9, 0.1, 0.2, 0.1], &mask, 2, 2)
            .unwrap();
        eval.add("good", &[0.3, 0.2, 0.1, 0.0], &[false; 4], 2, 2)
            .unwrap();
        let m = Metrics::new("demo", eval.finish().unwrap());
        assert_eq!(m.image_auroc, 1.0);
        assert_eq!(m.pixel_auroc, Some(1.0));
        let path = dir.path().join("metrics.json");
        m.write_json(&path).unwrap();
        assert_eq!(Metrics::read_json(&path).unwrap(), m);
    }
}
