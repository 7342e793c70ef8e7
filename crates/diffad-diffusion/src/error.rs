//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `diffad-diffusion`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by Candle (device, dtype, a tensor operation or a missing weight).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error raised by a shared layer of `diffad-nn`.
    #[error(transparent)]
    Nn(#[from] diffad_nn::Error),

    /// A configuration that cannot be used (schedule, scheduler, UNet, trainer).
    #[error("invalid {what} configuration: {reason}")]
    Config {
        /// Which configuration was rejected (e.g. `"DDIM"`, `"UNet"`).
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// A tensor does not have the shape an operation needs.
    #[error("{op}: expected {expected}, got shape {got:?}")]
    Shape {
        /// The operation that rejected the tensor.
        op: &'static str,
        /// The expected shape, in words (e.g. `"(B, 4, h, w)"`).
        expected: String,
        /// The dimensions actually received.
        got: Vec<usize>,
    },

    /// A diffusion timestep outside `0..num_train_timesteps`.
    #[error("timestep {t} is out of range 0..{num_train_timesteps}")]
    Timestep {
        /// The offending timestep.
        t: usize,
        /// The number of training timesteps `T` of the schedule.
        num_train_timesteps: usize,
    },

    /// A stochastic step (DDPM at `t > 0`, DDIM with `eta > 0`) was called without noise.
    #[error("the {scheduler} step at t = {t} is stochastic and needs a noise tensor")]
    MissingNoise {
        /// The scheduler name.
        scheduler: &'static str,
        /// The timestep of the step.
        t: usize,
    },

    /// The training loss became NaN or infinite.
    #[error("non-finite loss {loss} at training step {step}")]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// The optimiser step at which it appeared.
        step: u64,
    },

    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A checkpoint file is missing a tensor, is truncated or does not match the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An input batch is empty or otherwise unusable.
    #[error("invalid input: {0}")]
    Input(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn config(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn shape(op: &'static str, expected: impl Into<String>, got: &[usize]) -> Self {
        Self::Shape {
            op,
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Maps the file errors of `diffad-nn`'s checkpoint I/O onto this crate's variants
/// ([`Error::Io`], [`Error::Checkpoint`]); other errors stay [`Error::Nn`]. Used by the
/// UNet loader and the trainer's checkpoints alike.
pub(crate) fn file_error(e: diffad_nn::Error) -> Error {
    match e {
        diffad_nn::Error::Io { path, source } => Error::Io { path, source },
        diffad_nn::Error::Checkpoint { path, reason } => Error::Checkpoint { path, reason },
        diffad_nn::Error::WeightsMismatch { path, mismatch } => Error::Checkpoint {
            path,
            reason: format!("does not fit the model: {mismatch}"),
        },
        other => Error::Nn(other),
    }
}

/// Converts a crate error into a Candle error, for trait methods (such as
/// [`crate::Denoiser::predict`]) whose contract returns `candle_core::Result`.
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(c) => c,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}
