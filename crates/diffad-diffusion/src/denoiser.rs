//! The denoiser interface, the timesteps it takes, and the conditioning variants of the
//! paper's Table 1.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::noise_schedule::NoiseSchedule;

/// `eps_theta(z_t, t, c)`: anything that predicts the noise (paper Eq. 2/3 and the
/// conditional objective of Sec. 3.3).
///
/// Implemented by [`crate::UNet`]; implement it to plug in another network.
pub trait Denoiser {
    /// Predicts the model output (the noise, for epsilon prediction) for `z_t` `(B, C, h, w)`
    /// at per-sample timesteps `t` `(B)` and an optional condition `(B, Cc, h, w)`, which is
    /// concatenated to `z_t` on channels.
    ///
    /// `t` holds integer timesteps `0..T`; [`crate::UNet`] accepts any numeric dtype, and the
    /// functions of this crate pass `u32`.
    fn predict(
        &self,
        z_t: &Tensor,
        t: &Tensor,
        condition: Option<&Tensor>,
    ) -> candle_core::Result<Tensor>;
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn predict(
        &self,
        z_t: &Tensor,
        t: &Tensor,
        condition: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        (**self).predict(z_t, t, condition)
    }
}

/// `u32` timesteps `(B)` as the denoisers of this crate take them.
pub fn timestep_tensor(t: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = t.iter().map(|&t| t as u32).collect();
    Ok(Tensor::from_vec(v, t.len(), device)?.to_dtype(DType::U32)?)
}

/// How the denoiser sees the anomalous input `c = E(x_a)`: the rows of the paper's
/// Table 1, so its ablation can be reproduced. The names are the pipeline's
/// (`diffad::Reconstruction`).
///
/// | variant | training | reconstruction |
/// |---|---|---|
/// | `Unconditional` | unconditional DDPM on `z = E(x)` | generation from noise, no condition |
/// | `CleanCondition` (`DiffAD_c`) | `eps_theta(z_t, t, c)` | DDIM from noise with `c` |
/// | `NoisyCondition` (DiffAD) | `eps_theta(z_t, t, c_noisy)`, `t_c` independent of `t` | DDIM from noise with `c` (or `c` noised at a chosen `t_c`) |
/// | `ForwardReverse` (`DiffAD_f&r`, SDEdit) | unconditional | noise `c` to `t_start`, denoise without condition |
///
/// Serialised as `{"mode": "noisy_condition"}` etc.; the names written before the
/// variants were renamed (`"none"`, `"clean"`, `"noisy"`, e.g. in the metadata of older
/// [`LdmTrainer`](crate::LdmTrainer) checkpoints) are still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ConditionMode {
    /// No condition (plain latent DDPM).
    #[serde(alias = "none")]
    Unconditional,
    /// Clean concatenation of `c` (the "common approach" the paper improves on).
    #[serde(alias = "clean")]
    CleanCondition,
    /// Noisy condition embedding (paper Sec. 3.3): in training
    /// `c_noisy = sqrt(abar_tc) c + sqrt(1 - abar_tc) eps'`, `t_c ~ U{0..T-1}`.
    #[serde(alias = "noisy")]
    NoisyCondition,
    /// Forward-reverse / SDEdit: diffuse the input itself to `t_start`, then run the reverse
    /// chain of an unconditional model from there.
    ForwardReverse {
        /// The timestep the input is noised to (`0..T`).
        t_start: usize,
    },
}

impl ConditionMode {
    /// Whether the denoiser takes the condition as extra input channels.
    pub fn is_conditional(&self) -> bool {
        matches!(self, Self::CleanCondition | Self::NoisyCondition)
    }
}

/// The noisy condition embedding (paper Sec. 3.3):
/// `c_noisy[b] = sqrt(abar_{t_c[b]}) c[b] + sqrt(1 - abar_{t_c[b]}) eps'[b]`, with per-sample
/// `t_c` and the noise `eps'` given (draw it with [`crate::noise`] for reproducibility).
pub fn noisy_condition(
    schedule: &NoiseSchedule,
    condition: &Tensor,
    t_c: &[usize],
    noise: &Tensor,
) -> Result<Tensor> {
    if condition.rank() != 4 {
        return Err(Error::shape(
            "noisy_condition",
            "(B, C, h, w)",
            condition.dims(),
        ));
    }
    schedule.add_noise(condition, noise, t_c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_modes_serialise_with_their_names_and_read_the_old_ones() {
        let json = |m: ConditionMode| serde_json::to_string(&m).unwrap();
        assert_eq!(
            json(ConditionMode::NoisyCondition),
            r#"{"mode":"noisy_condition"}"#
        );
        assert_eq!(
            json(ConditionMode::ForwardReverse { t_start: 3 }),
            r#"{"mode":"forward_reverse","t_start":3}"#
        );
        for (old, mode) in [
            ("none", ConditionMode::Unconditional),
            ("clean", ConditionMode::CleanCondition),
            ("noisy", ConditionMode::NoisyCondition),
        ] {
            let read: ConditionMode =
                serde_json::from_str(&format!(r#"{{"mode":"{old}"}}"#)).unwrap();
            assert_eq!(read, mode);
            let again: ConditionMode = serde_json::from_str(&json(mode)).unwrap();
            assert_eq!(again, mode);
        }
    }
}
