//! # diffad
//!
//! DiffAD (Zhang et al., ICCV 2023): unsupervised surface anomaly detection
//! with a latent diffusion model. This facade composes the stage crates
//! (re-exported below) into the whole method:
//!
//! * [`data`]: MVTec AD folders (listing, masks matched by stem, resizing)
//!   into the workspace's image types ([`data::RgbImage`], [`data::Mask`]);
//! * [`config`]: one TOML configuration with the paper's defaults
//!   ([`Config::paper`], the repository's `diffad.toml`), the Table 1
//!   variants, a `tiny` CPU preset, and the builders of the stage crates'
//!   configurations;
//! * [`run_dir`]: the run directory ([`RunDir`]) of one training run;
//! * [`train()`]: training of the three stages ([`Stage`]: VAE, conditional
//!   LDM, segmenter) with atomic, resumable checkpoints;
//! * [`model`]: inference ([`DiffAd::predict`]) on top of the frozen VAE and
//!   LDM (the crate-private reconstructor) and the segmenter, in `f32`,
//!   `bf16` or `f16` ([`config::Precision`]);
//! * [`seeds`]: the one seeding scheme (named salts);
//! * [`predict`]: prediction on folders (mirrored outputs, `predictions.csv`)
//!   with the run's [`thresholds`], which turn scores into decisions;
//! * [`diagnose`]: where the quality goes, stage by stage (VAE PSNR,
//!   whether `x_r` removes synthetic defects, segmenter on synthetic versus
//!   real defects), `diagnosis.json`;
//! * [`eval`] and [`report`]: `metrics.json`, `scores.csv`, float32 TIFF
//!   anomaly maps in the MVTec evaluation layout, PNG overlays;
//! * [`demo_data`]: a procedural MVTec-layout dataset for the demo;
//! * [`photo_data`]: the real-photograph benchmark (six surfaces, five
//!   defect kinds DRAEM's synthesis never makes) and [`baseline`], the
//!   raw-pixel patch nearest-neighbour detector it is measured against;
//! * [`export`]: a run's VAE, denoiser and sampler as diffusers folders;
//! * [`benchmark`]: every class of an MVTec AD root at once (train,
//!   evaluate, `summary.csv` and `summary.md`);
//! * [`quality`]: `docs/quality.md` regenerated from scratch: the
//!   real-photograph benchmark with the `cpu` preset beside the baseline,
//!   the per-stage diagnosis, the issue's criterion;
//! * [`speed`]: sampling speed on any device and precision (UNet forward,
//!   DDIM, the whole predict path), the figures `scripts/gpu-check.sh`
//!   compares with PyTorch.
//!
//! Long tasks report progress through [`diffad_nn::progress::Progress`]
//! (see [`train::ProgressFactory`]); the library prints nothing, and
//! [`progress::Bar`] is the opt-in bar the binary draws.
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

pub mod baseline;
pub mod benchmark;
pub mod config;
pub mod data;
pub mod demo_data;
pub mod diagnose;
pub mod error;
pub mod eval;
pub mod export;
pub mod io;
pub mod model;
pub mod photo_data;
pub mod predict;
pub mod progress;
pub mod quality;
mod reconstructor;
pub mod report;
pub mod run_dir;
pub mod seeds;
pub mod speed;
pub mod stage;
pub mod thresholds;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
pub use model::{DiffAd, Prediction};
pub use run_dir::{RunDir, CONFIG_FILE};
pub use stage::Stage;
pub use train::{train, StageReport, TrainOptions};

pub use diffad_diffusion as diffusion;
pub use diffad_metrics as metrics;
pub use diffad_nn as nn;
pub use diffad_seg as seg;
pub use diffad_synth as synth;
pub use diffad_vae as vae;
