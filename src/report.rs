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
/// full report of [`diffad_metrics::Report`] (per defect type).
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
    /// Pixel-level AUROC over all pooled pixels.
    pub pixel_auroc: f64,
    /// Pixel-level average precision.
    pub pixel_ap: f64,
    /// AU-PRO up to FPR 0.3, normalised.
    pub aupro: f64,
    /// Pixel-level F1-max.
    pub pixel_f1_max: f64,
    /// Everything, per defect type.
    pub report: diffad_metrics::Report,
}

impl Metrics {
    /// Headline numbers of a report.
    pub fn new(class: &str, report: diffad_metrics::Report) -> Self {
        Self {
            class: class.to_owned(),
            images: report.image.images,
            image_auroc: report.image.auroc,
            image_f1_max: report.image.f1_max.f1,
            pixel_auroc: report.pixel.auroc,
            pixel_ap: report.pixel.average_precision,
            aupro: report.pixel.aupro,
            pixel_f1_max: report.pixel.f1_max.f1,
            report,
        }
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
        assert_eq!(m.pixel_auroc, 1.0);
        let path = dir.path().join("metrics.json");
        m.write_json(&path).unwrap();
        assert_eq!(Metrics::read_json(&path).unwrap(), m);
    }
}
