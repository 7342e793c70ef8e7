//! The ablation variants of the paper's Table 1, named once for the whole
//! workspace: [`Reconstruction`] (how the LDM is conditioned, mapped to
//! `diffad_diffusion::ConditionMode`) and [`SegmenterInput`] (what the
//! discriminative network sees, mapped to `diffad_seg::SegInput`), with the
//! same variant names in the stage crates.
//!
//! | Table 1 row | `ldm.reconstruction` | `segmenter.input` |
//! |---|---|---|
//! | DiffAD_f&r (SDEdit) | `forward-reverse` | `interpolated` |
//! | DiffAD_c (clean condition) | `clean-condition` | `interpolated` |
//! | DiffAD_no-inter | `noisy-condition` | `reconstruction-only` |
//! | DiffAD_x~a-inter (lambda = 1) | `noisy-condition` | `vae-reconstruction` |
//! | DiffAD | `noisy-condition` | `interpolated` |

use serde::{Deserialize, Serialize};

/// How the LDM reconstructs an image (paper Table 1, group (i)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reconstruction {
    /// Unconditional LDM; at test time the input latent is noised to
    /// `t = strength * T` and denoised (SDEdit, Meng et al. 2021): `DiffAD_f&r`.
    ForwardReverse,
    /// The condition `c = E(x_a)` is concatenated clean while training: `DiffAD_c`.
    CleanCondition,
    /// The condition is noised to an independent `t_c ~ U{0..T-1}` while
    /// training, `c_noisy = sqrt(abar_tc) c + sqrt(1 - abar_tc) eps'` (Sec. 3.3): DiffAD.
    NoisyCondition,
}

/// What the segmenter sees besides `x_a` and `x_r` (paper Table 1, group (ii)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmenterInput {
    /// `(x_r, x_a)`, 6 channels: `DiffAD_no-inter`.
    ReconstructionOnly,
    /// `(x_r, D(c), x_a)`, i.e. lambda = 1: `DiffAD_x~a-inter`.
    VaeReconstruction,
    /// `(x_r, x_inter, x_a)` with `x_inter = D(lambda c + (1 - lambda) z_r)` (Sec. 3.4): DiffAD.
    Interpolated,
}
