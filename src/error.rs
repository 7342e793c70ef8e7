//! The facade's error type: every failure names the file, folder or setting
//! that caused it, so the CLI can print it on one line.

use std::path::PathBuf;

use crate::stage::Stage;

/// Everything that can go wrong in the `diffad` facade (data, configuration,
/// run directories, pipeline, reports).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// An image file could not be decoded (unreadable, truncated, unknown format).
    #[error("{path}: unreadable image: {source}")]
    UnreadableImage {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// An image could not be encoded or written.
    #[error("{path}: cannot encode image: {message}")]
    ImageEncode {
        /// The output file.
        path: PathBuf,
        /// What the encoder said.
        message: String,
    },
    /// A folder that must hold images holds none.
    #[error("{path}: no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff) in this folder")]
    EmptyFolder {
        /// The folder.
        path: PathBuf,
    },
    /// A folder does not follow the MVTec AD layout.
    #[error("{path}: not an MVTec AD layout: {reason}")]
    Layout {
        /// The folder.
        path: PathBuf,
        /// What is missing or unexpected.
        reason: String,
    },
    /// A defective test image has no ground-truth mask.
    #[error("{expected}: missing ground-truth mask for test image {image}")]
    MissingMask {
        /// The test image.
        image: PathBuf,
        /// Where its mask should be (`ground_truth/<defect>/<stem>_mask.png`).
        expected: PathBuf,
    },
    /// A ground-truth mask matches no test image (by stem).
    #[error("{mask}: ground-truth mask matches no test image (expected {expected})")]
    OrphanMask {
        /// The mask.
        mask: PathBuf,
        /// The test image it would belong to.
        expected: PathBuf,
    },
    /// A mask's size differs from its image's size.
    #[error("{mask}: mask is {mask_width}x{mask_height} but its image {image} is {image_width}x{image_height}")]
    MaskSizeMismatch {
        /// The mask file.
        mask: PathBuf,
        /// The image file.
        image: PathBuf,
        /// Mask width.
        mask_width: u32,
        /// Mask height.
        mask_height: u32,
        /// Image width.
        image_width: u32,
        /// Image height.
        image_height: u32,
    },
    /// Image data with the wrong number of values or a wrong shape.
    #[error("bad image data: {0}")]
    Shape(String),
    /// A configuration file could not be parsed or holds an invalid value.
    #[error("{path}: invalid configuration: {message}")]
    Config {
        /// The configuration file (or `<built-in>` for presets).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A run directory was created with another configuration.
    #[error("{run_dir}: run directory was made with another configuration ({field} differs); use a new --out or the same --config")]
    ConfigMismatch {
        /// The run directory.
        run_dir: PathBuf,
        /// The first differing setting.
        field: String,
    },
    /// A run directory lacks a stage that the command needs.
    #[error("{path}: missing checkpoint; train the `{stage}` stage first")]
    MissingCheckpoint {
        /// The checkpoint that was expected.
        path: PathBuf,
        /// The stage that writes it.
        stage: Stage,
    },
    /// One class of a multi-class benchmark failed (`crate::benchmark`).
    #[error("class `{class}` ({path}): {source}")]
    Class {
        /// The class name.
        class: String,
        /// Its data folder.
        path: PathBuf,
        /// What went wrong.
        source: Box<Error>,
    },
    /// A JSON file could not be read or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A TIFF anomaly map could not be written.
    #[error("{path}: cannot write TIFF: {source}")]
    Tiff {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        source: tiff::TiffError,
    },
    /// Anomaly synthesis or a procedural texture failed.
    #[error("synthesis: {0}")]
    Synth(#[from] diffad_synth::Error),
    /// An evaluation metric could not be computed.
    #[error("metrics: {0}")]
    Metrics(#[from] diffad_metrics::Error),
    /// The VAE failed (its error names the file or shape at fault).
    #[error("vae: {0}")]
    Vae(#[from] diffad_vae::Error),
    /// The denoiser, a scheduler or the LDM trainer failed.
    #[error("ldm: {0}")]
    Diffusion(#[from] diffad_diffusion::Error),
    /// The segmenter or its trainer failed.
    #[error("seg: {0}")]
    Segmenter(#[from] diffad_seg::Error),
    /// A shared layer, optimiser or checkpoint file failed.
    #[error("nn: {0}")]
    Nn(#[from] diffad_nn::Error),
    /// Tensor arithmetic failed.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the `diffad` facade.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
