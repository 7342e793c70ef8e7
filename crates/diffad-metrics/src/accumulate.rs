//! Streaming accumulators: feed images one at a time, get every metric at
//! the end without the caller holding the maps.

use std::collections::BTreeMap;

use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::classification::check_two_classes;
use crate::classification::BinaryMetrics;
use crate::error::{Error, Result};
use crate::pro::{check_fpr_limit, DEFAULT_FPR_LIMIT};
use crate::ranked::F1Max;
use crate::ranked::{pack, sort_descending, sweep, ProSpec, Subset, SweepOutput, MAX_GROUPS};
use crate::regions::pack_image;
use crate::view::{check_shape, row_major, width_height};

/// The defect type of normal test images in MVTec AD (`test/good/`). In the
/// per-defect breakdown every other type is evaluated together with these
/// images, the usual per-defect protocol.
pub const GOOD: &str = "good";

/// Counts of one group (defect type) of samples.
#[derive(Clone, Debug, Default)]
struct GroupStats {
    name: String,
    images: usize,
    positives: u64,
    negatives: u64,
    regions: usize,
}

/// Defect types seen so far; group 0 holds samples given without a type.
#[derive(Clone, Debug)]
struct Groups(Vec<GroupStats>);

impl Default for Groups {
    fn default() -> Self {
        Self(vec![GroupStats::default()])
    }
}

impl Groups {
    /// The id of a defect type, registering it on first use.
    fn id(&mut self, name: &str) -> Result<u8> {
        if let Some(i) = self.0.iter().skip(1).position(|g| g.name == name) {
            return Ok((i + 1) as u8);
        }
        if self.0.len() > MAX_GROUPS {
            return Err(Error::TooManyDefectTypes(self.0.len()));
        }
        self.0.push(GroupStats {
            name: name.to_owned(),
            ..GroupStats::default()
        });
        Ok((self.0.len() - 1) as u8)
    }

    fn good(&self) -> Option<u8> {
        self.0
            .iter()
            .skip(1)
            .position(|g| g.name == GOOD)
            .map(|i| (i + 1) as u8)
    }

    /// Every named defect type other than [`GOOD`], with the subset that
    /// evaluates it (its own samples plus the good ones) and that subset's
    /// combined counts.
    fn breakdown_subsets(&self) -> Vec<(String, Subset, GroupStats)> {
        let good = self.good();
        self.0
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, g)| g.name != GOOD)
            .map(|(id, g)| {
                let id = id as u8;
                let mut stats = g.clone();
                if let Some(good) = good {
                    let extra = &self.0[usize::from(good)];
                    stats.images += extra.images;
                    stats.positives += extra.positives;
                    stats.negatives += extra.negatives;
                    stats.regions += extra.regions;
                }
                (
                    g.name.clone(),
                    Subset::Groups(id, good.unwrap_or(id)),
                    stats,
                )
            })
            .collect()
    }
}

/// Streaming pixel-level evaluation: pixel AUROC, pixel AP, AU-PRO and
/// pixel F1-max over all pixels of all images pooled together, normal images
/// included (the MVTec AD / DRAEM / DiffAD protocol, `docs/reference.md` §5).
///
/// Each [`update`](Self::update) labels the mask's 8-connected regions and
/// stores every pixel compactly as one 8-byte word (score key, defect type,
/// region number), so the caller may drop the map; 100 maps of 256x256 take
/// 52 MB. [`finish`](Self::finish) radix-sorts the words once (with the same
/// amount of scratch memory) and sweeps them once per reported subset.
///
/// ```
/// use diffad_metrics::PixelMetrics;
/// let mut metrics = PixelMetrics::new();
/// // A 2x2 image with one defective pixel, scored highest; then a normal image.
/// metrics.update(&[0.9, 0.1, 0.2, 0.3], &[true, false, false, false], 2, 2)?;
/// metrics.update(&[0.1, 0.0, 0.2, 0.4], &[false; 4], 2, 2)?;
/// let report = metrics.finish()?;
/// assert_eq!(report.auroc, 1.0);
/// assert_eq!(report.aupro, 1.0);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PixelMetrics {
    fpr_limit: f64,
    packed: Vec<u64>,
    region_sizes: Vec<u32>,
    groups: Groups,
    images: usize,
    labels: Vec<u32>,
    stack: Vec<usize>,
}

impl Default for PixelMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PixelMetrics {
    /// An empty accumulator integrating AU-PRO up to FPR 0.3
    /// ([`DEFAULT_FPR_LIMIT`]).
    pub fn new() -> Self {
        Self {
            fpr_limit: DEFAULT_FPR_LIMIT,
            packed: Vec::new(),
            region_sizes: Vec::new(),
            groups: Groups::default(),
            images: 0,
            labels: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// An empty accumulator with another AU-PRO integration limit; errors if
    /// it is outside `(0, 1]`.
    pub fn with_fpr_limit(fpr_limit: f64) -> Result<Self> {
        check_fpr_limit(fpr_limit)?;
        Ok(Self {
            fpr_limit,
            ..Self::new()
        })
    }

    /// Reserves memory for `pixels` more pixels (optional).
    pub fn reserve(&mut self, pixels: usize) {
        self.packed.reserve(pixels);
    }

    /// Adds one image without a defect type: its anomaly map and ground-truth
    /// mask, both row-major `width` x `height`. Images may differ in size.
    ///
    /// Errors (the accumulator is then unchanged): map or mask not
    /// `width * height`, a non-finite map value (image number and pixel
    /// given), or more than [`crate::MAX_REGIONS`] regions in total.
    pub fn update(
        &mut self,
        map: &[f32],
        mask: &[bool],
        width: usize,
        height: usize,
    ) -> Result<()> {
        self.update_group(0, map, mask, width, height)
    }

    /// Like [`update`](Self::update), also recording the image's defect type
    /// (e.g. the MVTec AD folder name, [`GOOD`] for normal images) for the
    /// per-defect breakdown of the report.
    pub fn update_defect(
        &mut self,
        defect_type: &str,
        map: &[f32],
        mask: &[bool],
        width: usize,
        height: usize,
    ) -> Result<()> {
        let group = self.groups.id(defect_type)?;
        self.update_group(group, map, mask, width, height)
    }

    /// [`update`](Self::update) with an `(H, W)` anomaly map and mask given
    /// as `ndarray` views (any memory layout); the same result as the slice
    /// version. Errors with [`Error::ShapeMismatch`] if the shapes differ,
    /// then as [`update`](Self::update).
    pub fn update_view(
        &mut self,
        map: ArrayView2<'_, f32>,
        mask: ArrayView2<'_, bool>,
    ) -> Result<()> {
        check_shape(self.images, "mask", map.shape(), mask.shape())?;
        let (width, height) = width_height(&map);
        self.update(&row_major(&map), &row_major(&mask), width, height)
    }

    /// [`update_defect`](Self::update_defect) with `ndarray` views, as
    /// [`update_view`](Self::update_view).
    pub fn update_defect_view(
        &mut self,
        defect_type: &str,
        map: ArrayView2<'_, f32>,
        mask: ArrayView2<'_, bool>,
    ) -> Result<()> {
        check_shape(self.images, "mask", map.shape(), mask.shape())?;
        let (width, height) = width_height(&map);
        self.update_defect(
            defect_type,
            &row_major(&map),
            &row_major(&mask),
            width,
            height,
        )
    }

    fn update_group(
        &mut self,
        group: u8,
        map: &[f32],
        mask: &[bool],
        width: usize,
        height: usize,
    ) -> Result<()> {
        let start = self.packed.len();
        self.packed.resize(start + map.len(), 0);
        let packed = pack_image(
            self.images,
            map,
            mask,
            width,
            height,
            group,
            self.region_sizes.len(),
            &mut self.packed[start..],
            &mut self.labels,
            &mut self.stack,
        );
        let packed = match packed {
            Ok(p) => p,
            Err(e) => {
                self.packed.truncate(start);
                return Err(e);
            }
        };
        self.images += 1;
        let stats = &mut self.groups.0[usize::from(group)];
        stats.images += 1;
        stats.positives += packed.positives;
        stats.negatives += packed.negatives;
        stats.regions += packed.region_sizes.len();
        self.region_sizes.extend_from_slice(&packed.region_sizes);
        Ok(())
    }

    /// Number of images added so far.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Number of pixels added so far.
    pub fn pixels(&self) -> usize {
        self.packed.len()
    }

    /// Computes every pixel metric. Errors if no image was added, or if the
    /// images hold no anomalous or no normal pixel. Per-defect entries whose
    /// subset has only one class get `None` metrics instead.
    pub fn finish(self) -> Result<PixelReport> {
        let Self {
            fpr_limit,
            mut packed,
            region_sizes,
            groups,
            images,
            ..
        } = self;
        if packed.is_empty() {
            return Err(Error::EmptyInput { what: "images" });
        }
        let positives: u64 = groups.0.iter().map(|g| g.positives).sum();
        let negatives: u64 = groups.0.iter().map(|g| g.negatives).sum();
        check_two_classes(positives, negatives)?;
        sort_descending(&mut packed);
        let inverse_region_size: Vec<f64> =
            region_sizes.iter().map(|&s| 1.0 / f64::from(s)).collect();
        let run = |subset: Subset, positives: u64, negatives: u64, regions: usize| {
            sweep(
                &packed,
                subset,
                positives,
                negatives,
                Some(ProSpec {
                    inverse_region_size: &inverse_region_size,
                    regions,
                    fpr_limit,
                }),
            )
        };
        let subsets = groups.breakdown_subsets();
        let (overall, per_defect) = rayon::join(
            || run(Subset::All, positives, negatives, region_sizes.len()),
            || {
                subsets
                    .into_par_iter()
                    .map(|(name, subset, stats)| {
                        let out = (stats.positives > 0 && stats.negatives > 0)
                            .then(|| run(subset, stats.positives, stats.negatives, stats.regions));
                        (name, PixelBreakdown::new(&stats, out))
                    })
                    .collect::<BTreeMap<_, _>>()
            },
        );
        Ok(PixelReport {
            auroc: overall.auroc,
            average_precision: overall.average_precision,
            aupro: overall.aupro.unwrap_or(0.0),
            f1_max: overall.f1_max,
            fpr_limit,
            images,
            pixels: packed.len() as u64,
            anomalous_pixels: positives,
            regions: region_sizes.len(),
            per_defect,
        })
    }
}

/// Pixel-level results of a [`PixelMetrics`] accumulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PixelReport {
    /// Pixel AUROC (scikit-learn `roc_auc_score` over all pixels).
    pub auroc: f64,
    /// Pixel average precision (scikit-learn `average_precision_score`).
    pub average_precision: f64,
    /// Normalised AU-PRO up to `fpr_limit` (MVTec AD definition).
    pub aupro: f64,
    /// Best pixel F1 and its threshold.
    pub f1_max: F1Max,
    /// The AU-PRO integration limit.
    pub fpr_limit: f64,
    /// Number of images.
    pub images: usize,
    /// Number of pixels.
    pub pixels: u64,
    /// Number of anomalous (ground-truth positive) pixels.
    pub anomalous_pixels: u64,
    /// Number of ground-truth regions (8-connected components).
    pub regions: usize,
    /// Per defect type: that type's images together with the [`GOOD`] ones.
    pub per_defect: BTreeMap<String, PixelBreakdown>,
}

/// Pixel metrics of one defect type (its images plus the good ones); the
/// metrics are `None` when that subset holds only one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PixelBreakdown {
    /// Images in the subset (this type's plus the good ones).
    pub images: usize,
    /// Anomalous pixels in the subset.
    pub anomalous_pixels: u64,
    /// Ground-truth regions in the subset.
    pub regions: usize,
    /// Pixel AUROC.
    pub auroc: Option<f64>,
    /// Pixel average precision.
    pub average_precision: Option<f64>,
    /// AU-PRO.
    pub aupro: Option<f64>,
    /// Pixel F1-max.
    pub f1_max: Option<F1Max>,
}

impl PixelBreakdown {
    fn new(stats: &GroupStats, out: Option<SweepOutput>) -> Self {
        Self {
            images: stats.images,
            anomalous_pixels: stats.positives,
            regions: stats.regions,
            auroc: out.map(|o| o.auroc),
            average_precision: out.map(|o| o.average_precision),
            aupro: out.and_then(|o| o.aupro),
            f1_max: out.map(|o| o.f1_max),
        }
    }
}

/// Streaming image-level evaluation: image AUROC, AP and F1-max over one
/// score per image (e.g. [`crate::image_score`] of its anomaly map).
///
/// ```
/// use diffad_metrics::ImageMetrics;
/// let mut metrics = ImageMetrics::new();
/// metrics.push_defect("good", 0.1, false)?;
/// metrics.push_defect("crack", 0.7, true)?;
/// metrics.push_defect("good", 0.3, false)?;
/// let report = metrics.finish()?;
/// assert_eq!(report.auroc, 1.0);
/// assert_eq!(report.per_defect["crack"].auroc, Some(1.0));
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ImageMetrics {
    packed: Vec<u64>,
    groups: Groups,
}

impl ImageMetrics {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one image's score and label (`true` = anomalous). Errors on a
    /// non-finite score (the image number is given).
    pub fn push(&mut self, score: f32, anomalous: bool) -> Result<()> {
        self.push_group(0, score, anomalous)
    }

    /// Like [`push`](Self::push), also recording the defect type for the
    /// per-defect breakdown.
    pub fn push_defect(&mut self, defect_type: &str, score: f32, anomalous: bool) -> Result<()> {
        if !score.is_finite() {
            return Err(Error::NonFiniteScore {
                index: self.packed.len(),
                value: score,
            });
        }
        let group = self.groups.id(defect_type)?;
        self.push_group(group, score, anomalous)
    }

    fn push_group(&mut self, group: u8, score: f32, anomalous: bool) -> Result<()> {
        if !score.is_finite() {
            return Err(Error::NonFiniteScore {
                index: self.packed.len(),
                value: score,
            });
        }
        self.packed.push(pack(score, group, u32::from(anomalous)));
        let stats = &mut self.groups.0[usize::from(group)];
        stats.images += 1;
        if anomalous {
            stats.positives += 1;
        } else {
            stats.negatives += 1;
        }
        Ok(())
    }

    /// Number of images added so far.
    pub fn images(&self) -> usize {
        self.packed.len()
    }

    /// Computes the image metrics. Errors if no image was added or only one
    /// class is present; per-defect entries with one class get `None`.
    pub fn finish(&self) -> Result<ImageReport> {
        if self.packed.is_empty() {
            return Err(Error::EmptyInput { what: "images" });
        }
        let positives: u64 = self.groups.0.iter().map(|g| g.positives).sum();
        let negatives = self.packed.len() as u64 - positives;
        check_two_classes(positives, negatives)?;
        let mut sorted = self.packed.clone();
        sort_descending(&mut sorted);
        let overall: BinaryMetrics = sweep(&sorted, Subset::All, positives, negatives, None).into();
        let per_defect = self
            .groups
            .breakdown_subsets()
            .into_iter()
            .map(|(name, subset, stats)| {
                let out = (stats.positives > 0 && stats.negatives > 0).then(|| {
                    BinaryMetrics::from(sweep(
                        &sorted,
                        subset,
                        stats.positives,
                        stats.negatives,
                        None,
                    ))
                });
                let breakdown = ImageBreakdown {
                    images: stats.images,
                    anomalous: stats.positives as usize,
                    auroc: out.map(|o| o.auroc),
                    average_precision: out.map(|o| o.average_precision),
                    f1_max: out.map(|o| o.f1_max),
                };
                (name, breakdown)
            })
            .collect();
        Ok(ImageReport {
            auroc: overall.auroc,
            average_precision: overall.average_precision,
            f1_max: overall.f1_max,
            images: self.packed.len(),
            anomalous: positives as usize,
            per_defect,
        })
    }
}

/// Image-level results of an [`ImageMetrics`] accumulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageReport {
    /// Image AUROC.
    pub auroc: f64,
    /// Image average precision.
    pub average_precision: f64,
    /// Best image F1 and its score threshold.
    pub f1_max: F1Max,
    /// Number of images.
    pub images: usize,
    /// Number of anomalous images.
    pub anomalous: usize,
    /// Per defect type: that type's images together with the [`GOOD`] ones.
    pub per_defect: BTreeMap<String, ImageBreakdown>,
}

/// Image metrics of one defect type (its images plus the good ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageBreakdown {
    /// Images in the subset.
    pub images: usize,
    /// Anomalous images in the subset.
    pub anomalous: usize,
    /// Image AUROC (`None` if the subset has one class only).
    pub auroc: Option<f64>,
    /// Image average precision.
    pub average_precision: Option<f64>,
    /// Image F1-max.
    pub f1_max: Option<F1Max>,
}
