//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong when computing a metric.
///
/// Bad input is always reported through this enum; no function of the crate
/// panics on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input that must hold at least one element was empty.
    #[error("empty input: {what} has no elements")]
    EmptyInput {
        /// Which input was empty.
        what: &'static str,
    },
    /// Only one class is present, so the metric is undefined (scikit-learn's
    /// `roc_auc_score` raises here too). For AU-PRO, `positives` counts the
    /// pixels of ground-truth regions and `negatives` the normal pixels.
    #[error(
        "only one class present ({positives} positive, {negatives} negative): the metric is undefined"
    )]
    OneClass {
        /// Number of positive samples (anomalous images or pixels).
        positives: u64,
        /// Number of negative samples (normal images or pixels).
        negatives: u64,
    },
    /// Two inputs that must have the same length do not.
    #[error("length mismatch: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// Which input has the wrong length.
        what: &'static str,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// A score is NaN or infinite.
    #[error("non-finite score {value} at index {index}")]
    NonFiniteScore {
        /// Position of the score in its slice (or the image number, for
        /// per-image scores pushed one at a time).
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A pixel of an anomaly map is NaN or infinite.
    #[error("non-finite value {value} in the anomaly map of image {image} at (x = {x}, y = {y})")]
    NonFiniteMap {
        /// Image number (0-based, in the order the maps were given).
        image: usize,
        /// Column of the pixel.
        x: usize,
        /// Row of the pixel.
        y: usize,
        /// The offending value.
        value: f32,
    },
    /// A map or mask does not have `width * height` pixels.
    #[error(
        "image {image}: the {what} has {got} pixels but width x height is {width} x {height} = {expected}"
    )]
    SizeMismatch {
        /// Image number (0-based).
        image: usize,
        /// `"anomaly map"` or `"mask"`.
        what: &'static str,
        /// Declared width.
        width: usize,
        /// Declared height.
        height: usize,
        /// `width * height`.
        expected: usize,
        /// The number of pixels given.
        got: usize,
    },
    /// An `ndarray` input does not have the shape of the one it goes with
    /// (a mask and its anomaly map, two images compared by PSNR).
    #[error("image {image}: the {what} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Image number (0-based).
        image: usize,
        /// Which input has the wrong shape.
        what: &'static str,
        /// The shape it should have.
        expected: Vec<usize>,
        /// The shape it has.
        got: Vec<usize>,
    },
    /// The AU-PRO integration limit is outside `(0, 1]`.
    #[error("fpr_limit must lie in (0, 1], got {0}")]
    FprLimit(f64),
    /// The smoothing of [`crate::gaussian_smooth`] has a negative or non-finite sigma.
    #[error("the smoothing sigma must be finite and at least 0, got {0}")]
    Sigma(f64),
    /// The mean-filter kernel of [`crate::image_score`] is zero.
    #[error("the mean-filter kernel must be at least 1 pixel wide, got {0}")]
    Kernel(usize),
    /// More ground-truth regions than the packed representation can index.
    #[error("too many ground-truth regions: {0} (at most {max})", max = crate::ranked::MAX_REGIONS)]
    TooManyRegions(usize),
    /// More distinct defect types than the packed representation can index.
    #[error("too many defect types: {0} (at most {max})", max = crate::ranked::MAX_GROUPS)]
    TooManyDefectTypes(usize),
    /// Serialising a report failed.
    #[error("JSON serialisation failed: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing a report failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The issue text calls the error type `MetricsError`; it is the same type.
pub type MetricsError = Error;
