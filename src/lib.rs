//! # diffad
//!
//! DiffAD (Zhang et al., ICCV 2023): unsupervised surface anomaly detection
//! with a latent diffusion model. This facade composes the stage crates
//! (re-exported below) into the whole method:
//!
//! * [`data`]: MVTec AD folders (listing, masks matched by stem, resizing);
//! * [`config`]: one TOML configuration with the paper's defaults
//!   ([`Config::paper`], the repository's `diffad.toml`), the Table 1
//!   variants and a `tiny` CPU preset;
//! * [`pipeline`]: run directories, training of the three stages (VAE,
//!   conditional LDM, segmenter) with atomic, resumable checkpoints, and
//!   [`DiffAd::predict`];
//! * [`eval`] and [`report`]: `metrics.json`, `scores.csv`, float32 TIFF
//!   anomaly maps in the MVTec evaluation layout, PNG overlays;
//! * [`demo_data`]: a procedural MVTec-layout dataset for the demo.
//!
//! ```
//! let auroc = diffad::metrics::auroc(&[0.1, 0.9, 0.4], &[false, true, false]).unwrap();
//! assert!((auroc - 1.0).abs() < 1e-12);
//! let config = diffad::Config::tiny();
//! assert_eq!(config.latent_size(), 16);
//! ```
//!
//! End to end (see `examples/quickstart.rs`): write a demo dataset, train
//! every stage of the tiny configuration, evaluate.

pub mod config;
pub mod data;
pub mod demo_data;
pub mod error;
pub mod eval;
pub mod io;
pub mod pipeline;
pub mod report;

pub use config::Config;
pub use error::{Error, Result};
pub use pipeline::{DiffAd, Prediction, RunDir, Stage, TrainOptions};

pub use diffad_diffusion as diffusion;
pub use diffad_metrics as metrics;
pub use diffad_nn as nn;
pub use diffad_seg as seg;
pub use diffad_synth as synth;
pub use diffad_vae as vae;
