//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `diffad-seg`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Candle tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error from a shared layer of `diffad-nn`.
    #[error(transparent)]
    Nn(#[from] diffad_nn::Error),

    /// An error from `diffad-metrics` (image scores).
    #[error(transparent)]
    Metrics(#[from] diffad_metrics::Error),

    /// A tensor had the wrong shape for the operation named in `what`.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument or operation was checked.
        what: &'static str,
        /// The expected shape, in words (e.g. `(B, 2, H, W)`).
        expected: String,
        /// The shape actually received.
        got: Vec<usize>,
    },

    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The input contained NaN or infinite values.
    #[error("{0} contains NaN or infinite values")]
    NonFinite(&'static str),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A checkpoint file is corrupt, truncated or lacks an expected entry.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },

    /// A [`ReconstructionSource`](crate::ReconstructionSource) had no samples.
    #[error("the reconstruction source has no samples")]
    EmptySource,

    /// An error raised by a caller-supplied source or decoder.
    #[error("{0}")]
    Source(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Shape error helper: `what` expected `expected`, got `got`.
pub(crate) fn shape_err(what: &'static str, expected: impl Into<String>, got: &[usize]) -> Error {
    Error::Shape {
        what,
        expected: expected.into(),
        got: got.to_vec(),
    }
}
