//! The ablation variants of the paper's Table 1, named once for the whole
//! workspace: [`Reconstruction`] (how the LDM is conditioned, mapped to
//! `diffad_diffusion::ConditionMode`) and [`SegmenterInput`] (what the
//! discriminative network sees, mapped to `diffad_seg::SegInput`), with the
//! same variant names in the stage crates. [`Table1Row`] names the rows and
//! sets both settings at once:
//!
//! | Table 1 row | `ldm.reconstruction` | `segmenter.input` | paper: Det. / Loc. AUROC / AP |
//! |---|---|---|---|
//! | DiffAD_f&r (SDEdit) | `forward-reverse` | `reconstruction-only`: concat(x_a, x_r) | 94.6 / 93.6 / 57.3 |
//! | DiffAD_c (clean condition) | `clean-condition` | `reconstruction-only`: concat(x_a, x_r) | 95.8 / 93.9 / 61.1 |
//! | DiffAD_no-inter | `noisy-condition` | `reconstruction-only`: concat(x_a, x_r) | 96.4 / 97.0 / 65.1 |
//! | DiffAD_x~a-inter (lambda = 1) | `noisy-condition` | `vae-reconstruction`: concat(x_a, x~_a, x_r) | 97.4 / 97.3 / 67.0 |
//! | DiffAD | `noisy-condition` | `interpolated`: concat(x_a, x_inter, x_r) | 98.7 / 98.3 / 74.6 |

use serde::{Deserialize, Serialize};

use super::Config;

/// The DiffAD rows of the paper's Table 1 (Sec. 4.2): which reconstruction
/// and which segmenter input each ablation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Table1Row {
    /// `DiffAD_f&r`: forward + reverse diffusion of the input (SDEdit), the
    /// segmenter on concat(x_a, x_r).
    ForwardReverse,
    /// `DiffAD_c`: the clean condition `c`, the segmenter on concat(x_a, x_r).
    CleanCondition,
    /// `DiffAD_no-inter`: the noisy condition, the segmenter on concat(x_a, x_r).
    NoInterpolation,
    /// `DiffAD_x~a-inter`: the noisy condition, the segmenter on
    /// concat(x_a, x~_a = D(c), x_r) (lambda = 1).
    VaeReconstructionChannels,
    /// `DiffAD`: the noisy condition and the interpolated channels.
    DiffAd,
}

impl Table1Row {
    /// Every row, in the paper's order.
    pub const ALL: [Table1Row; 5] = [
        Table1Row::ForwardReverse,
        Table1Row::CleanCondition,
        Table1Row::NoInterpolation,
        Table1Row::VaeReconstructionChannels,
        Table1Row::DiffAd,
    ];

    /// The row's name in the paper.
    pub fn paper_name(self) -> &'static str {
        match self {
            Table1Row::ForwardReverse => "DiffAD_f&r",
            Table1Row::CleanCondition => "DiffAD_c",
            Table1Row::NoInterpolation => "DiffAD_no-inter",
            Table1Row::VaeReconstructionChannels => "DiffAD_x~a-inter",
            Table1Row::DiffAd => "DiffAD",
        }
    }

    /// The row's reconstruction and segmenter input.
    pub fn settings(self) -> (Reconstruction, SegmenterInput) {
        match self {
            Table1Row::ForwardReverse => (
                Reconstruction::ForwardReverse,
                SegmenterInput::ReconstructionOnly,
            ),
            Table1Row::CleanCondition => (
                Reconstruction::CleanCondition,
                SegmenterInput::ReconstructionOnly,
            ),
            Table1Row::NoInterpolation => (
                Reconstruction::NoisyCondition,
                SegmenterInput::ReconstructionOnly,
            ),
            Table1Row::VaeReconstructionChannels => (
                Reconstruction::NoisyCondition,
                SegmenterInput::VaeReconstruction,
            ),
            Table1Row::DiffAd => (Reconstruction::NoisyCondition, SegmenterInput::Interpolated),
        }
    }

    /// `config` with this row's reconstruction and segmenter input.
    pub fn apply(self, mut config: Config) -> Config {
        let (reconstruction, input) = self.settings();
        config.ldm.reconstruction = reconstruction;
        config.segmenter.input = input;
        config
    }

    /// The paper's MVTec AD averages of the row (Table 1): image AUROC,
    /// pixel AUROC, pixel AP, in percent.
    pub fn paper_results(self) -> [f64; 3] {
        match self {
            Table1Row::ForwardReverse => [94.6, 93.6, 57.3],
            Table1Row::CleanCondition => [95.8, 93.9, 61.1],
            Table1Row::NoInterpolation => [96.4, 97.0, 65.1],
            Table1Row::VaeReconstructionChannels => [97.4, 97.3, 67.0],
            Table1Row::DiffAd => [98.7, 98.3, 74.6],
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table1_rows_pair_reconstructions_and_inputs_as_the_paper() {
        use Reconstruction as R;
        use SegmenterInput as S;
        // Paper Table 1: every row above the interpolation group feeds the
        // discriminative network concat(x_a, x_r).
        assert_eq!(
            Table1Row::ForwardReverse.settings(),
            (R::ForwardReverse, S::ReconstructionOnly)
        );
        assert_eq!(
            Table1Row::CleanCondition.settings(),
            (R::CleanCondition, S::ReconstructionOnly)
        );
        assert_eq!(
            Table1Row::NoInterpolation.settings(),
            (R::NoisyCondition, S::ReconstructionOnly)
        );
        assert_eq!(
            Table1Row::VaeReconstructionChannels.settings(),
            (R::NoisyCondition, S::VaeReconstruction)
        );
        assert_eq!(
            Table1Row::DiffAd.settings(),
            (R::NoisyCondition, S::Interpolated)
        );
        // The paper's configuration is the DiffAD row.
        let paper = Config::paper();
        assert_eq!(Table1Row::DiffAd.apply(paper.clone()), paper);
        for row in Table1Row::ALL {
            row.apply(Config::tiny())
                .validate(std::path::Path::new("row"))
                .unwrap();
        }
    }
}
