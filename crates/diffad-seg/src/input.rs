//! Interpolated channels (paper Sec. 3.4) and the segmenter's input variants
//! (the rows of the paper's Table 1).
//!
//! The discriminative sub-network sees the channel concatenation of the
//! reconstruction `x_r`, an optional middle piece and the (anomalous) input
//! `x_a`:
//!
//! | [`SegInput`]                     | channels                 | Table 1 row                     |
//! |----------------------------------|--------------------------|---------------------------------|
//! | `Interpolated { lambda }`        | `(x_r, x_inter, x_a)`, 9 | DiffAD (default, lambda = 0.5)  |
//! | `VaeReconstruction`              | `(x_r, D(c), x_a)`, 9    | "VAE-reconstructed x~_a"        |
//! | `ReconstructionOnly`             | `(x_r, x_a)`, 6          | noisy condition, no interpolation |
//!
//! with `z_inter = lambda c + (1 - lambda) z_r` and `x_inter = D(z_inter)`.
//! This crate knows nothing of the VAE: decoding goes through the small
//! [`LatentDecoder`] trait (closures implement it), which the pipeline adapts
//! to its autoencoder.

use candle_core::Tensor;

use crate::error::{shape_err, Error, Result};

/// A decoder `D` from latents to images, as used for `x_r = D(z_r)` and
/// `x_inter = D(z_inter)`.
///
/// Any `Fn(&Tensor) -> candle_core::Result<Tensor>` implements it, so a
/// closure around the pipeline's autoencoder is enough.
pub trait LatentDecoder {
    /// Decodes latents `(B, c, h, w)` into images `(B, C, H, W)`.
    fn decode(&self, z: &Tensor) -> Result<Tensor>;
}

impl<F> LatentDecoder for F
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self(z)?)
    }
}

/// The interpolated latent `z_inter = lambda c + (1 - lambda) z_r` (paper
/// eq. in Sec. 3.4), `lambda` in `[0, 1]`.
///
/// `c` is the VAE latent of the anomalous input `x_a`, `z_r` the latent the
/// diffusion model reconstructed.
///
/// ```
/// use candle_core::{Device, Tensor};
/// # fn main() -> diffad_seg::Result<()> {
/// let c = Tensor::new(&[2f32, 4.0], &Device::Cpu)?;
/// let z_r = Tensor::new(&[0f32, 0.0], &Device::Cpu)?;
/// let z = diffad_seg::interpolated_latent(&c, &z_r, 0.25)?;
/// assert_eq!(z.to_vec1::<f32>()?, vec![0.5, 1.0]);
/// # Ok(()) }
/// ```
pub fn interpolated_latent(c: &Tensor, z_r: &Tensor, lambda: f64) -> Result<Tensor> {
    check_lambda(lambda)?;
    if c.dims() != z_r.dims() {
        return Err(shape_err(
            "interpolated_latent z_r",
            format!("{:?} (the shape of c)", c.dims()),
            z_r.dims(),
        ));
    }
    Ok(((c * lambda)? + (z_r * (1.0 - lambda))?)?)
}

fn check_lambda(lambda: f64) -> Result<()> {
    if (0.0..=1.0).contains(&lambda) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "interpolation lambda must be in [0, 1], got {lambda}"
        )))
    }
}

/// Which channels the discriminative sub-network sees besides `x_r` and
/// `x_a` (paper Table 1; the names are the pipeline's `diffad::SegmenterInput`). The
/// default is DiffAD's `Interpolated { lambda: 0.5 }`.
///
/// Serialised with the variant names; `"None"`, the name of `ReconstructionOnly` before
/// it was renamed (e.g. in the `train_config` of older [`SegTrainer`](crate::SegTrainer)
/// checkpoints), is still read.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SegInput {
    /// `(x_r, x_inter, x_a)` with `x_inter = D(lambda c + (1 - lambda) z_r)`.
    Interpolated {
        /// Interpolation weight of the input latent `c` (paper: 0.5).
        lambda: f64,
    },
    /// `(x_r, D(c), x_a)`: the VAE's own reconstruction of the input.
    VaeReconstruction,
    /// `(x_r, x_a)`: no middle piece (6 channels for RGB).
    #[serde(alias = "None")]
    ReconstructionOnly,
}

impl Default for SegInput {
    fn default() -> Self {
        Self::Interpolated { lambda: 0.5 }
    }
}

impl SegInput {
    /// Whether this variant has a middle piece between `x_r` and `x_a`.
    pub fn has_middle(&self) -> bool {
        !matches!(self, Self::ReconstructionOnly)
    }

    /// Input channels of the segmenter for images with `image_channels`
    /// channels: `3 * image_channels` with a middle piece, else `2 *`.
    pub fn in_channels(&self, image_channels: usize) -> usize {
        if self.has_middle() {
            3 * image_channels
        } else {
            2 * image_channels
        }
    }

    /// The middle piece decoded from latents: `D(z_inter)` for
    /// `Interpolated`, `D(c)` for `VaeReconstruction`, nothing for
    /// `ReconstructionOnly`.
    pub fn middle_from_latents(
        &self,
        c: &Tensor,
        z_r: &Tensor,
        decoder: &dyn LatentDecoder,
    ) -> Result<Option<Tensor>> {
        match *self {
            Self::Interpolated { lambda } => {
                let z_inter = interpolated_latent(c, z_r, lambda)?;
                Ok(Some(decoder.decode(&z_inter)?))
            }
            Self::VaeReconstruction => Ok(Some(decoder.decode(c)?)),
            Self::ReconstructionOnly => Ok(None),
        }
    }

    /// Concatenates `(x_r, middle, x_a)` along the channel axis of
    /// `(B, C, H, W)` images (or `(C, H, W)` single images: axis 0).
    ///
    /// `middle` must be given exactly when [`has_middle`](Self::has_middle)
    /// is true; all pieces must have the same shape.
    pub fn assemble(&self, x_r: &Tensor, middle: Option<&Tensor>, x_a: &Tensor) -> Result<Tensor> {
        let rank = x_a.rank();
        if rank != 3 && rank != 4 {
            return Err(shape_err(
                "SegInput x_a",
                "(B, C, H, W) or (C, H, W)",
                x_a.dims(),
            ));
        }
        if x_r.dims() != x_a.dims() {
            return Err(shape_err(
                "SegInput x_r",
                format!("{:?} (the shape of x_a)", x_a.dims()),
                x_r.dims(),
            ));
        }
        let axis = rank - 3;
        match (self.has_middle(), middle) {
            (true, Some(m)) => {
                if m.dims() != x_a.dims() {
                    return Err(shape_err(
                        "SegInput middle piece",
                        format!("{:?} (the shape of x_a)", x_a.dims()),
                        m.dims(),
                    ));
                }
                Ok(Tensor::cat(&[x_r, m, x_a], axis)?)
            }
            (false, _) => Ok(Tensor::cat(&[x_r, x_a], axis)?),
            (true, None) => Err(Error::Config(format!(
                "segmenter input {self:?} needs a middle piece (x_inter or D(c)), none was given"
            ))),
        }
    }

    /// Builds the whole input from latents: `x_r = D(z_r)`, the middle piece
    /// from [`middle_from_latents`](Self::middle_from_latents), concatenated
    /// with `x_a` by [`assemble`](Self::assemble).
    pub fn from_latents(
        &self,
        x_a: &Tensor,
        c: &Tensor,
        z_r: &Tensor,
        decoder: &dyn LatentDecoder,
    ) -> Result<Tensor> {
        let x_r = decoder.decode(z_r)?;
        let middle = self.middle_from_latents(c, z_r, decoder)?;
        self.assemble(&x_r, middle.as_ref(), x_a)
    }

    /// Checks the variant's parameters (lambda in `[0, 1]`).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Interpolated { lambda } => check_lambda(lambda),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_serialise_with_their_names_and_read_the_old_one() {
        let json = serde_json::to_string(&SegInput::ReconstructionOnly).unwrap();
        assert_eq!(json, r#""ReconstructionOnly""#);
        let old: SegInput = serde_json::from_str(r#""None""#).unwrap();
        assert_eq!(old, SegInput::ReconstructionOnly);
        let lambda: SegInput = serde_json::from_str(r#"{"Interpolated":{"lambda":0.5}}"#).unwrap();
        assert_eq!(lambda, SegInput::default());
    }
}
