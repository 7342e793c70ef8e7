//! The crate's error type, and [`WeightsMismatch`], the report that a strict load of a
//! weights file (`checkpoint::load_varmap`) attaches to [`Error::WeightsMismatch`].

use std::fmt;

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
        mismatch: WeightsMismatch,
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

/// Why a weights file does not fit a model (all lists sorted by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightsMismatch {
    /// Tensors the model needs that the file lacks.
    pub missing: Vec<String>,
    /// Tensors in the file that the model does not have.
    pub unexpected: Vec<String>,
    /// `(name, model shape, file shape)` of tensors whose shapes differ.
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl WeightsMismatch {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

impl fmt::Display for WeightsMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing [{}]", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected [{}]", self.unexpected.join(", ")));
        }
        if !self.wrong_shape.is_empty() {
            let shapes: Vec<String> = self
                .wrong_shape
                .iter()
                .map(|(n, want, got)| format!("{n}: model {want:?}, file {got:?}"))
                .collect();
            parts.push(format!("wrong shape [{}]", shapes.join("; ")));
        }
        write!(f, "{}", parts.join("; "))
    }
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
