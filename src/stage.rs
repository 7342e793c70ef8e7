//! The three training stages of DiffAD (paper Sec. 3, Fig. 2).

use std::fmt;

/// A training stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The KL autoencoder (paper Sec. 3.2).
    Vae,
    /// The conditional latent diffusion model (paper Sec. 3.2-3.3).
    Ldm,
    /// The discriminative segmentation network (paper Sec. 3.4).
    Segmenter,
}

impl Stage {
    /// All stages in training order.
    pub const ALL: [Stage; 3] = [Stage::Vae, Stage::Ldm, Stage::Segmenter];

    /// Short name (`vae`, `ldm`, `seg`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Vae => "vae",
            Stage::Ldm => "ldm",
            Stage::Segmenter => "seg",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
