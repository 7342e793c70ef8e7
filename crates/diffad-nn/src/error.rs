//! The crate's error type.

/// Everything that can go wrong in `diffad-nn`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by Candle (device, dtype, a tensor operation or a missing weight).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A tensor handed to a layer does not have the shape the layer needs.
    #[error("{layer}: expected {expected}, got shape {got:?}")]
    Shape {
        /// The layer or function that rejected the tensor.
        layer: &'static str,
        /// What shape was expected, in words (e.g. `"(B, 64, H, W)"`).
        expected: String,
        /// The dimensions actually received.
        got: Vec<usize>,
    },

    /// A layer configuration that cannot be built (e.g. channels not divisible by groups).
    #[error("invalid configuration for {layer}: {reason}")]
    Config {
        /// The layer being configured.
        layer: &'static str,
        /// Why the configuration is invalid.
        reason: String,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint or weights file is truncated, corrupt or lacks an entry.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A weights file does not fit the model: missing, unexpected or wrongly-shaped tensors.
    #[error("{path} does not fit the model: {mismatch}")]
    WeightsMismatch {
        /// The file.
        path: std::path::PathBuf,
        /// Every difference found.
        mismatch: crate::checkpoint::WeightsMismatch,
    },

    /// A JSON file could not be read or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn shape(layer: &'static str, expected: impl Into<String>, got: &[usize]) -> Self {
        Self::Shape {
            layer,
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    pub(crate) fn config(layer: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            layer,
            reason: reason.into(),
        }
    }
}

/// Checks that `x` is a 4-D `(B, C, H, W)` map with `channels` channels and returns its dims.
pub(crate) fn expect_nchw(
    layer: &'static str,
    x: &candle_core::Tensor,
    channels: usize,
) -> Result<(usize, usize, usize, usize)> {
    match *x.dims() {
        [b, c, h, w] if c == channels => Ok((b, c, h, w)),
        _ => Err(Error::shape(
            layer,
            format!("(B, {channels}, H, W)"),
            x.dims(),
        )),
    }
}
