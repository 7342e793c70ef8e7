//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while synthesising anomalies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image, mask or requested output has a zero dimension.
    #[error("zero-sized image: {height}x{width} (height x width)")]
    ZeroSizedImage {
        /// Height in pixels.
        height: usize,
        /// Width in pixels.
        width: usize,
    },

    /// Images of one batch (or an image and its foreground mask) differ in size.
    #[error(
        "size mismatch at item {index}: expected {expected_height}x{expected_width}, \
         found {found_height}x{found_width} (height x width)"
    )]
    SizeMismatch {
        /// Position of the offending item in its batch.
        index: usize,
        /// Height of the first item (the reference).
        expected_height: usize,
        /// Width of the first item (the reference).
        expected_width: usize,
        /// Height of the offending item.
        found_height: usize,
        /// Width of the offending item.
        found_width: usize,
    },

    /// A raw buffer does not hold `height * width * channels` values.
    #[error("buffer of {found} values does not match shape {shape:?} ({expected} values)")]
    BufferLength {
        /// Shape the caller asked for, e.g. `[3, H, W]`.
        shape: Vec<usize>,
        /// `shape.iter().product()`.
        expected: usize,
        /// Length of the buffer actually given.
        found: usize,
    },

    /// An `ndarray` array does not have the shape a type needs.
    #[error("array of shape {found:?} where {expected} is needed")]
    ArrayShape {
        /// The shape needed, e.g. `"(H, W, 3)"`.
        expected: &'static str,
        /// The shape given.
        found: Vec<usize>,
    },

    /// A tensor has a shape or dtype this crate cannot convert.
    #[error("unsupported tensor: {0}")]
    TensorShape(String),

    /// A value that must be finite (an image pixel, a setting) is NaN or infinite.
    #[error("non-finite value in {0}")]
    NonFinite(&'static str),

    /// A pixel of a plane that must be finite (an anomaly map) is NaN or
    /// infinite; the first such pixel in row-major order.
    #[error("non-finite value {value} at (y = {y}, x = {x})")]
    NonFinitePixel {
        /// The offending value.
        value: f32,
        /// Its row.
        y: usize,
        /// Its column.
        x: usize,
    },

    /// A batch with no images was given.
    #[error("empty batch: at least one image is needed")]
    EmptyBatch,

    /// A texture folder holds no usable `.jpg`/`.jpeg`/`.png` file.
    #[error("no usable .jpg/.jpeg/.png image found under {}", path.display())]
    EmptyTextureFolder {
        /// The folder that was searched (recursively).
        path: PathBuf,
    },

    /// A setting is out of its valid range (a probability outside [0, 1], an
    /// empty exponent range, ...).
    #[error("invalid setting `{field}`: {reason}")]
    InvalidConfig {
        /// Name of the offending setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// An image file could not be decoded (corrupt, truncated, unsupported).
    #[error("cannot decode image {}: {source}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },

    /// An image could not be encoded or written to a file.
    #[error("cannot write image {}: {source}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },

    /// A file or folder could not be read or written.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An error from Candle while building tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that a setting is a probability in `[0, 1]`.
pub(crate) fn check_probability(field: &'static str, p: f32) -> Result<()> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            field,
            reason: format!("{p} is not a probability in [0, 1]"),
        })
    }
}

/// Checks that an image size is non-zero.
pub(crate) fn check_size(height: usize, width: usize) -> Result<()> {
    if height == 0 || width == 0 {
        Err(Error::ZeroSizedImage { height, width })
    } else {
        Ok(())
    }
}
