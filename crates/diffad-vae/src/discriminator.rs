//! PatchGAN discriminator (taming-transformers' `NLayerDiscriminator`, used by LDM's
//! autoencoder loss from step 50001 with weight 0.5, `docs/reference.md` §2).
//!
//! ```text
//! main.0  Conv 4x4 s2 p1 (3 → ndf) + bias, LeakyReLU(0.2)
//! for n in 1..n_layers:  Conv 4x4 s2 p1 (no bias), BatchNorm, LeakyReLU(0.2)
//! Conv 4x4 s1 p1 (no bias), BatchNorm, LeakyReLU(0.2)
//! Conv 4x4 s1 p1 (→ 1) + bias                → logits (B, 1, h, w), one per patch
//! ```
//!
//! Widths `ndf · min(2ⁿ, 8)`. Parameter names are the `nn.Sequential` indices `main.{i}`
//! of the reference, and the init is its `weights_init`: conv weights `N(0, 0.02)`,
//! BatchNorm weights `N(1, 0.02)`, biases 0 for BatchNorm (the conv biases keep PyTorch's
//! default).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use diffad_nn::{batch_norm2d_with_init, conv2d, BatchNorm2d, BatchNormInit, Conv2d, Conv2dConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Architecture of a [`PatchGan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchGanConfig {
    /// Input channels (3).
    pub in_channels: usize,
    /// Width of the first layer (`ndf`, 64 in LDM).
    pub ndf: usize,
    /// Number of stride-2 layers (3 in LDM).
    pub n_layers: usize,
}

impl Default for PatchGanConfig {
    /// LDM's discriminator: 3 input channels, `ndf = 64`, 3 layers.
    fn default() -> Self {
        Self {
            in_channels: 3,
            ndf: 64,
            n_layers: 3,
        }
    }
}

/// One `Conv → [BatchNorm] → [LeakyReLU]` stage.
#[derive(Debug, Clone)]
struct Stage {
    conv: Conv2d,
    norm: Option<BatchNorm2d>,
    activation: bool,
}

/// The PatchGAN discriminator (see the module doc). Its variables live in its own
/// [`VarMap`] (BatchNorm running statistics included).
#[derive(Clone)]
pub struct PatchGan {
    stages: Vec<Stage>,
    varmap: VarMap,
    config: PatchGanConfig,
}

/// `max(x, 0.2 x)`, written as `relu(x) − 0.2 relu(−x)` so it has a backward.
fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? - (x.neg()?.relu()? * 0.2)?)?)
}

impl std::fmt::Debug for PatchGan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchGan")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PatchGan {
    /// A freshly initialised discriminator (weights drawn on the CPU from `seed`).
    pub fn new(config: PatchGanConfig, seed: u64, device: &Device) -> Result<Self> {
        if config.in_channels == 0 || config.ndf == 0 || config.n_layers == 0 {
            return Err(Error::Config(format!(
                "PatchGAN config {config:?} has a zero size"
            )));
        }
        let varmap = VarMap::new();
        let vb = diffad_nn::init::seeded_var_builder(&varmap, seed, DType::F32, device);
        let vb = vb.pp("main");
        let conv_cfg = |stride: usize, bias: bool| Conv2dConfig {
            padding: 1,
            stride,
            bias,
            init: Some(diffad_nn::init::DRAEM_CONV_WEIGHT),
            ..Conv2dConfig::default()
        };
        let bn = |c: usize, index: usize| {
            batch_norm2d_with_init(c, 1e-5, 0.1, BatchNormInit::draem(), vb.pp(index))
        };
        let mut stages = Vec::new();
        let mut index = 0;
        let ndf = config.ndf;
        stages.push(Stage {
            conv: conv2d(config.in_channels, ndf, 4, conv_cfg(2, true), vb.pp(index))?,
            norm: None,
            activation: true,
        });
        index += 2; // conv, LeakyReLU
        let mut mult = 1;
        for n in 1..=config.n_layers {
            let prev = mult;
            mult = (1 << n).min(8);
            let stride = if n < config.n_layers { 2 } else { 1 };
            let conv = conv2d(
                ndf * prev,
                ndf * mult,
                4,
                conv_cfg(stride, false),
                vb.pp(index),
            )?;
            let norm = bn(ndf * mult, index + 1)?;
            stages.push(Stage {
                conv,
                norm: Some(norm),
                activation: true,
            });
            index += 3; // conv, BatchNorm, LeakyReLU
        }
        stages.push(Stage {
            conv: conv2d(ndf * mult, 1, 4, conv_cfg(1, true), vb.pp(index))?,
            norm: None,
            activation: false,
        });
        Ok(Self {
            stages,
            varmap,
            config,
        })
    }

    /// Patch logits `(B, 1, h, w)` for images `(B, C, H, W)` in `[−1, 1]`. `train` uses
    /// batch statistics in the BatchNorms (and updates their running statistics).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for stage in &self.stages {
            h = stage.conv.forward(&h)?;
            if let Some(norm) = &stage.norm {
                h = norm.forward_t(&h, train)?;
            }
            if stage.activation {
                h = leaky_relu(&h)?;
            }
        }
        Ok(h)
    }

    /// The variables, keyed `main.{i}.weight` etc. as in taming-transformers.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The architecture.
    pub fn config(&self) -> &PatchGanConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_output_shape_follow_taming() {
        let d = PatchGan::new(PatchGanConfig::default(), 0, &Device::Cpu).unwrap();
        let names: Vec<String> = {
            let data = d.varmap().data().lock().unwrap();
            let mut n: Vec<String> = data.keys().cloned().collect();
            n.sort();
            n
        };
        for expected in [
            "main.0.weight",
            "main.0.bias",
            "main.2.weight",
            "main.3.running_var",
            "main.5.weight",
            "main.8.weight",
            "main.9.weight",
            "main.11.weight",
            "main.11.bias",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} not in {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n == "main.2.bias"));
        let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let y = d.forward_t(&x, false).unwrap();
        // 64 -> 32 -> 16 -> 8 -> 7 -> 6 (taming's receptive-field 70 PatchGAN)
        assert_eq!(y.dims(), &[2, 1, 6, 6]);
    }
}
