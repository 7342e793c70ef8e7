//! # diffad
//!
//! DiffAD (Zhang et al., ICCV 2023): unsupervised surface anomaly detection
//! with a latent diffusion model. This facade re-exports the stage crates.
//!
//! ```
//! let auroc = diffad::metrics::auroc(&[0.1, 0.9, 0.4], &[false, true, false]).unwrap();
//! assert!((auroc - 1.0).abs() < 1e-12);
//! ```

pub use diffad_diffusion as diffusion;
pub use diffad_metrics as metrics;
pub use diffad_nn as nn;
pub use diffad_seg as seg;
pub use diffad_synth as synth;
pub use diffad_vae as vae;
