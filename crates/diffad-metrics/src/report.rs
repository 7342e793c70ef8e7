//! A whole-category evaluation (image and pixel level, per defect type) and
//! its JSON report.

use std::fmt;
use std::path::Path;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::accumulate::{ImageMetrics, ImageReport, PixelMetrics, PixelReport};
use crate::error::{Error, Result};
use crate::image_score::{image_score, DRAEM_KERNEL};
use crate::view::{check_shape, row_major, width_height};

/// Evaluates one category the way DRAEM and DiffAD do: every test image's
/// anomaly map and mask are added once; the image score is the maximum of
/// the `kernel` x `kernel` mean filter of the map ([`image_score`]); an
/// image is anomalous when its mask has a defective pixel (in MVTec AD this
/// is the folder rule, `good` = normal); pixel metrics pool all pixels.
///
/// ```
/// use diffad_metrics::Evaluator;
/// let mut eval = Evaluator::new();
/// let (w, h) = (4, 4);
/// let mut mask = vec![false; w * h];
/// mask[5] = true;
/// let defect_map: Vec<f32> = mask.iter().map(|&m| if m { 0.9 } else { 0.1 }).collect();
/// eval.add("scratch", &defect_map, &mask, w, h)?;
/// eval.add("good", &vec![0.05; w * h], &vec![false; w * h], w, h)?;
/// let report = eval.finish()?;
/// assert_eq!(report.image.auroc, 1.0);
/// assert_eq!(report.pixel.aupro, 1.0);
/// let json = report.to_json()?;
/// assert!(json.contains("\"scratch\""));
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Evaluator {
    kernel: usize,
    pixel: PixelMetrics,
    image: ImageMetrics,
}

impl Default for Evaluator {
    fn default() -> Self {
        Self::new()
    }
}

impl Evaluator {
    /// DRAEM/DiffAD settings: 21x21 image-score filter, AU-PRO up to FPR 0.3.
    pub fn new() -> Self {
        Self {
            kernel: DRAEM_KERNEL,
            pixel: PixelMetrics::new(),
            image: ImageMetrics::new(),
        }
    }

    /// Other settings; errors if `kernel` is 0 or `fpr_limit` is outside
    /// `(0, 1]`.
    pub fn with_options(kernel: usize, fpr_limit: f64) -> Result<Self> {
        if kernel == 0 {
            return Err(Error::Kernel(kernel));
        }
        Ok(Self {
            kernel,
            pixel: PixelMetrics::with_fpr_limit(fpr_limit)?,
            image: ImageMetrics::new(),
        })
    }

    /// Adds one test image of the given defect type and returns its image
    /// score. Errors as [`PixelMetrics::update`] (the evaluator is then
    /// unchanged).
    pub fn add(
        &mut self,
        defect_type: &str,
        map: &[f32],
        mask: &[bool],
        width: usize,
        height: usize,
    ) -> Result<f32> {
        // Validate everything before touching either accumulator.
        let score = image_score(map, width, height, self.kernel).map_err(|e| match e {
            Error::NonFiniteMap { x, y, value, .. } => Error::NonFiniteMap {
                image: self.pixel.images(),
                x,
                y,
                value,
            },
            Error::SizeMismatch {
                what,
                width,
                height,
                expected,
                got,
                ..
            } => Error::SizeMismatch {
                image: self.pixel.images(),
                what,
                width,
                height,
                expected,
                got,
            },
            other => other,
        })?;
        self.pixel
            .update_defect(defect_type, map, mask, width, height)?;
        let anomalous = mask.iter().any(|&m| m);
        self.image.push_defect(defect_type, score, anomalous)?;
        Ok(score)
    }

    /// [`add`](Self::add) with an `(H, W)` anomaly map and mask given as
    /// `ndarray` views (any memory layout); the same score and report as the
    /// slice version. Errors with [`Error::ShapeMismatch`] if the shapes
    /// differ, then as [`add`](Self::add).
    ///
    /// ```
    /// use diffad_metrics::Evaluator;
    /// use ndarray::Array2;
    /// let mut eval = Evaluator::with_options(3, 0.3)?;
    /// let mut map = Array2::<f32>::from_elem((4, 4), 0.1);
    /// map[[1, 2]] = 0.9;
    /// let mask = map.mapv(|v| v > 0.5);
    /// eval.add_view("scratch", map.view(), mask.view())?;
    /// eval.add_view("good", Array2::from_elem((4, 4), 0.05).view(), Array2::from_elem((4, 4), false).view())?;
    /// assert_eq!(eval.finish()?.image.auroc, 1.0);
    /// # Ok::<(), diffad_metrics::Error>(())
    /// ```
    pub fn add_view(
        &mut self,
        defect_type: &str,
        map: ArrayView2<'_, f32>,
        mask: ArrayView2<'_, bool>,
    ) -> Result<f32> {
        check_shape(self.pixel.images(), "mask", map.shape(), mask.shape())?;
        let (width, height) = width_height(&map);
        self.add(
            defect_type,
            &row_major(&map),
            &row_major(&mask),
            width,
            height,
        )
    }

    /// Computes the report.
    pub fn finish(self) -> Result<Report> {
        let image = self.image.finish()?;
        let pixel = self.pixel.finish()?;
        Ok(Report {
            image_score_kernel: self.kernel,
            image,
            pixel,
        })
    }
}

/// Image- and pixel-level results of one category, with the per-defect-type
/// breakdown; serialisable to JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Width of the mean filter used for image scores.
    pub image_score_kernel: usize,
    /// Image-level metrics.
    pub image: ImageReport,
    /// Pixel-level metrics.
    pub pixel: PixelReport,
}

impl Report {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Writes the JSON report atomically (to `path.tmp`, then renamed).
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.to_json()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, json).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "   -  ".to_owned(), |v| format!("{:6.2}", 100.0 * v))
}

impl fmt::Display for Report {
    /// A table in percent: image AUROC / AP, pixel AUROC / AP / AU-PRO /
    /// F1-max, overall and per defect type.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, p) = (&self.image, &self.pixel);
        writeln!(
            f,
            "{:<20} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "defect type", "images", "I-AUROC", "I-AP", "P-AUROC", "P-AP", "AU-PRO", "P-F1max"
        )?;
        writeln!(
            f,
            "{:<20} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "(all)",
            i.images,
            percent(Some(i.auroc)),
            percent(Some(i.average_precision)),
            percent(Some(p.auroc)),
            percent(Some(p.average_precision)),
            percent(Some(p.aupro)),
            percent(Some(p.f1_max.f1)),
        )?;
        for (name, d) in &i.per_defect {
            let px = p.per_defect.get(name);
            writeln!(
                f,
                "{:<20} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                name,
                d.images,
                percent(d.auroc),
                percent(d.average_precision),
                percent(px.and_then(|x| x.auroc)),
                percent(px.and_then(|x| x.average_precision)),
                percent(px.and_then(|x| x.aupro)),
                percent(px.and_then(|x| x.f1_max.map(|m| m.f1))),
            )?;
        }
        write!(
            f,
            "image score: max of {k}x{k} mean filter; AU-PRO up to FPR {:.2}; pixel F1-max threshold {}",
            p.fpr_limit,
            p.f1_max.threshold,
            k = self.image_score_kernel
        )
    }
}
