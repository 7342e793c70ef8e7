//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `diffad-vae`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by Candle (device, dtype or a tensor operation).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error raised by a shared layer of `diffad-nn` (file errors of the shared
    /// checkpoint I/O are mapped to [`Error::Io`], [`Error::CorruptFile`],
    /// [`Error::WeightsMismatch`] and [`Error::Json`] instead).
    #[error(transparent)]
    Nn(diffad_nn::Error),

    /// A tensor handed to the crate does not have the shape it needs.
    #[error("{what}: expected {expected}, got shape {got:?}")]
    Shape {
        /// The function or model that rejected the tensor.
        what: &'static str,
        /// The expected shape, in words (e.g. `"(B, 3, H, W) with H, W divisible by 8"`).
        expected: String,
        /// The dimensions actually received.
        got: Vec<usize>,
    },

    /// A configuration that cannot be built or trained.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file is not a valid safetensors file (truncated, corrupt header, bad offsets).
    #[error("{path} is not a valid safetensors file: {reason}")]
    CorruptFile {
        /// The file involved.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },

    /// A weights file does not fit the model: tensors missing, unexpected or wrongly shaped.
    #[error("{path} does not match the model: {}", .mismatch)]
    WeightsMismatch {
        /// The file involved.
        path: PathBuf,
        /// Every mismatching tensor, by name.
        mismatch: diffad_nn::WeightsMismatch,
    },

    /// A JSON file (config or training state) could not be read or written.
    #[error("bad JSON in {path}: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// A loss or a gradient became NaN or infinite during training.
    #[error("non-finite {what} at step {step}")]
    NonFinite {
        /// What became non-finite (`"loss"`, `"gradient norm"`).
        what: &'static str,
        /// The optimisation step.
        step: u64,
    },

    /// Training data that cannot be used (empty set, wrong shapes, NaN values).
    #[error("invalid training data: {0}")]
    Data(String),
}

impl From<diffad_nn::Error> for Error {
    fn from(e: diffad_nn::Error) -> Self {
        use diffad_nn::Error as Nn;
        match e {
            Nn::Candle(e) => Self::Candle(e),
            Nn::Io { path, source } => Self::Io { path, source },
            Nn::Checkpoint { path, reason } => Self::CorruptFile { path, reason },
            Nn::WeightsMismatch { path, mismatch } => Self::WeightsMismatch { path, mismatch },
            Nn::Json { path, source } => Self::Json { path, source },
            other => Self::Nn(other),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(what: &'static str, expected: impl Into<String>, got: &[usize]) -> Self {
        Self::Shape {
            what,
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(c) => c,
            other => candle_core::Error::wrap(other),
        }
    }
}
