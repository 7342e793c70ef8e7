//! The VAE's loss terms as plain functions (anomalib's `loss.py` split).
//!
//! Reduction follows LDM's `LPIPSWithDiscriminator` (the loss DiffAD's released
//! `kl.yaml` trains with): per-pixel terms are **summed** over `(C, H, W)` and averaged
//! over the batch, and the KL is summed over the latent elements and averaged over the
//! batch. This keeps `kl_weight = 1e-6` at its reference strength relative to the
//! reconstruction.
//!
//! * [`reconstruction_loss`]: `Σ |x − x̂|` (L1, LDM's choice) or `Σ (x − x̂)²` per image.
//! * [`ssim_map`]: SSIM with an 11x11 Gaussian window (σ = 1.5) and zero padding, as in
//!   DRAEM's `SSIM` loss; the SSIM term per image is `Σ (1 − SSIM_map)`.
//! * [`hinge_d_loss`] / [`generator_loss`]: PatchGAN hinge losses (taming-transformers).
//! * [`PerceptualLoss`]: a pluggable perceptual distance. LDM uses LPIPS, which needs
//!   pretrained VGG-16 weights and LPIPS's learned linear heads; we cannot ship those
//!   weights, so no perceptual term is used unless you supply one.

use candle_core::{Device, Tensor, D};

use crate::error::{Error, Result};

/// Which pixel-wise reconstruction distance to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reconstruction {
    /// `|x − x̂|` (LDM's autoencoder loss).
    L1,
    /// `(x − x̂)²`.
    L2,
}

fn same_shape(what: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() || a.rank() != 4 {
        return Err(Error::shape(
            what,
            format!(
                "two (B, C, H, W) tensors of equal shape; the first is {:?}",
                a.dims()
            ),
            b.dims(),
        ));
    }
    Ok(())
}

/// Per-image reconstruction loss `(B)`: `Σ_{c,h,w} |x − x̂|` or `Σ (x − x̂)²`.
pub fn reconstruction_loss(x: &Tensor, x_hat: &Tensor, kind: Reconstruction) -> Result<Tensor> {
    same_shape("reconstruction_loss", x, x_hat)?;
    let diff = (x - x_hat)?;
    let per_pixel = match kind {
        Reconstruction::L1 => diff.abs()?,
        Reconstruction::L2 => diff.sqr()?,
    };
    Ok(per_pixel.flatten_from(1)?.sum(D::Minus1)?)
}

/// Side of the SSIM Gaussian window.
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation of the SSIM Gaussian window.
pub const SSIM_SIGMA: f64 = 1.5;

/// The normalised 1-D Gaussian `g[i] ∝ exp(−(i − 5)² / (2σ²))`, `i = 0..11`.
pub fn gaussian_window() -> Vec<f64> {
    let centre = (SSIM_WINDOW / 2) as f64;
    let g: Vec<f64> = (0..SSIM_WINDOW)
        .map(|i| (-((i as f64 - centre).powi(2)) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp())
        .collect();
    let total: f64 = g.iter().sum();
    g.into_iter().map(|v| v / total).collect()
}

/// The `(n, n)` banded matrix `M[i, j] = g[i − j + 5]` (0 outside the band): `x · M` is the
/// zero-padded ("same") 1-D Gaussian filtering of the rows of `x`.
fn blur_matrix(n: usize, device: &Device) -> Result<Tensor> {
    let g = gaussian_window();
    let half = SSIM_WINDOW / 2;
    let mut m = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            let k = i as isize - j as isize + half as isize;
            if (0..SSIM_WINDOW as isize).contains(&k) {
                m[i * n + j] = g[k as usize] as f32;
            }
        }
    }
    Ok(Tensor::from_vec(m, (n, n), device)?)
}

/// Separable 11x11 Gaussian filtering of `(B, C, H, W)` with zero padding, written as two
/// matrix products so that it is differentiable with Candle's matmul backward (and exact).
struct GaussianBlur {
    along_w: Tensor,
    along_h: Tensor,
}

impl GaussianBlur {
    fn new(h: usize, w: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            along_w: blur_matrix(w, device)?,
            along_h: blur_matrix(h, device)?,
        })
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let along_w = x
            .reshape((b * c * h, w))?
            .matmul(&self.along_w.to_dtype(x.dtype())?)?
            .reshape((b, c, h, w))?;
        let t = along_w
            .transpose(2, 3)?
            .contiguous()?
            .reshape((b * c * w, h))?;
        let along_h = t
            .matmul(&self.along_h.to_dtype(x.dtype())?)?
            .reshape((b, c, w, h))?
            .transpose(2, 3)?;
        Ok(along_h.contiguous()?)
    }
}

/// The SSIM map `(B, C, H, W)` of two images of equal shape whose values span
/// `data_range` (1 for `[0, 1]` images, 2 for `[−1, 1]`):
///
/// `SSIM = ((2 μ_x μ_y + C1)(2 σ_xy + C2)) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2))`,
/// with local moments from an 11x11 Gaussian window (σ = 1.5, zero padding, per channel),
/// `C1 = (0.01 L)²`, `C2 = (0.03 L)²` (Wang et al. 2004; DRAEM's `ssim`).
pub fn ssim_map(x: &Tensor, y: &Tensor, data_range: f64) -> Result<Tensor> {
    same_shape("ssim_map", x, y)?;
    let (_, _, h, w) = x.dims4()?;
    let blur = GaussianBlur::new(h, w, x.device())?;
    let mu_x = blur.apply(x)?;
    let mu_y = blur.apply(y)?;
    let mu_x2 = mu_x.sqr()?;
    let mu_y2 = mu_y.sqr()?;
    let mu_xy = (&mu_x * &mu_y)?;
    let sigma_x2 = (blur.apply(&x.sqr()?)? - &mu_x2)?;
    let sigma_y2 = (blur.apply(&y.sqr()?)? - &mu_y2)?;
    let sigma_xy = (blur.apply(&(x * y)?)? - &mu_xy)?;
    let c1 = (0.01 * data_range).powi(2);
    let c2 = (0.03 * data_range).powi(2);
    let numerator = (((&mu_xy * 2.0)? + c1)? * ((sigma_xy * 2.0)? + c2)?)?;
    let denominator = (((mu_x2 + mu_y2)? + c1)? * ((sigma_x2 + sigma_y2)? + c2)?)?;
    Ok((numerator / denominator)?)
}

/// Mean SSIM over all pixels and channels of each image `(B)`.
pub fn ssim(x: &Tensor, y: &Tensor, data_range: f64) -> Result<Tensor> {
    Ok(ssim_map(x, y, data_range)?
        .flatten_from(1)?
        .mean(D::Minus1)?)
}

/// Per-image SSIM loss `(B)`: `Σ_{c,h,w} (1 − SSIM_map)` (summed like the reconstruction).
pub fn ssim_loss(x: &Tensor, y: &Tensor, data_range: f64) -> Result<Tensor> {
    let map = ssim_map(x, y, data_range)?;
    Ok(map.affine(-1.0, 1.0)?.flatten_from(1)?.sum(D::Minus1)?)
}

/// Hinge loss of a discriminator (taming-transformers `hinge_d_loss`):
/// `½ (mean(relu(1 − D(x))) + mean(relu(1 + D(x̂))))`.
pub fn hinge_d_loss(logits_real: &Tensor, logits_fake: &Tensor) -> Result<Tensor> {
    let real = logits_real.affine(-1.0, 1.0)?.relu()?.mean_all()?;
    let fake = logits_fake.affine(1.0, 1.0)?.relu()?.mean_all()?;
    Ok(((real + fake)? * 0.5)?)
}

/// The generator's adversarial loss `−mean(D(x̂))` (LDM).
pub fn generator_loss(logits_fake: &Tensor) -> Result<Tensor> {
    Ok(logits_fake.mean_all()?.neg()?)
}

/// A perceptual distance between images, added to the reconstruction loss (LDM adds
/// LPIPS with weight 1).
///
/// LPIPS needs pretrained VGG-16 features and LPIPS's learned linear heads; those weights
/// cannot be shipped with this crate. Implement this trait over your own network (it must
/// be differentiable in `reconstruction`) and pass it to the trainer.
pub trait PerceptualLoss: Send + Sync {
    /// Distance per image `(B)` between `target` and `reconstruction`, both `(B, 3, H, W)`
    /// in `[−1, 1]`. The trainer sums it over pixels like the other terms, i.e. multiplies
    /// it by `C·H·W`, as LDM does when it broadcasts LPIPS over the pixel loss.
    fn distance(&self, target: &Tensor, reconstruction: &Tensor) -> Result<Tensor>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn window_is_normalised_and_symmetric() {
        let g = gaussian_window();
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((g[0] - g[10]).abs() < 1e-15 && g[5] > g[4]);
    }

    #[test]
    fn ssim_of_identical_images_is_one() {
        let x = Tensor::rand(0f32, 1f32, (1, 3, 16, 16), &Device::Cpu).unwrap();
        let s = ssim(&x, &x, 1.0).unwrap().to_vec1::<f32>().unwrap();
        assert!((s[0] - 1.0).abs() < 1e-5, "{s:?}");
        let l = ssim_loss(&x, &x, 1.0).unwrap().to_vec1::<f32>().unwrap();
        assert!(l[0].abs() < 1e-3);
    }

    #[test]
    fn l1_and_l2_sum_over_pixels() {
        let x = Tensor::zeros((2, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let y = (Tensor::ones((2, 1, 2, 2), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap();
        let l1 = reconstruction_loss(&x, &y, Reconstruction::L1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let l2 = reconstruction_loss(&x, &y, Reconstruction::L2)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(l1, vec![2.0, 2.0]);
        assert_eq!(l2, vec![1.0, 1.0]);
    }

    #[test]
    fn hinge_losses_match_hand_values() {
        let real = Tensor::new(&[2.0f32, 0.0], &Device::Cpu).unwrap();
        let fake = Tensor::new(&[-2.0f32, 0.5], &Device::Cpu).unwrap();
        // real: relu(1-2)=0, relu(1-0)=1 -> 0.5; fake: relu(-1)=0, relu(1.5)=1.5 -> 0.75
        let d = hinge_d_loss(&real, &fake)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((d - 0.625).abs() < 1e-6);
        let g = generator_loss(&fake).unwrap().to_scalar::<f32>().unwrap();
        assert!((g - 0.75).abs() < 1e-6);
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let x = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let y = Tensor::zeros((1, 3, 8, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(ssim_map(&x, &y, 1.0), Err(Error::Shape { .. })));
        assert!(matches!(
            reconstruction_loss(&x, &y, Reconstruction::L1),
            Err(Error::Shape { .. })
        ));
    }
}
