//! Masked peak signal-to-noise ratio, the paper's "direct copy" diagnostic.

use ndarray::{ArrayView, Dimension};

use crate::error::{Error, Result};
use crate::view::{check_shape, row_major};

/// Peak signal-to-noise ratio between `a` and `b` over the masked pixels,
/// for images in `[0, 1]` (peak 1):
///
/// ```text
/// PSNR = 10 log10(1 / MSE),  MSE = mean over masked elements of (a - b)^2
/// ```
///
/// The paper (`docs/reference.md` §5) measures PSNR inside the ground-truth mask
/// between the synthetic anomaly `x_a` and its reconstruction `x_r` to show
/// how much of the anomaly the generative model copies ("direct copy";
/// higher = more copying), and outside the mask (pass the inverted mask) to
/// show how faithfully normal regions are reconstructed.
///
/// `mask` is either one flag per element of `a`, or one flag per pixel of a
/// channel-first (CHW) image, in which case it applies to every channel
/// plane (`a.len()` must then be a multiple of `mask.len()`). Identical
/// images give `f64::INFINITY`, like scikit-image.
///
/// Errors: empty input, `a`/`b`/`mask` lengths that do not fit, no masked
/// element, or a non-finite value (its index in `a` or `b`).
///
/// ```
/// let a = [0.5f32, 0.5, 0.2, 0.9];
/// let b = [0.6f32, 0.4, 0.0, 0.0];
/// // Only the first two elements count: MSE = 0.01, PSNR = 20 dB.
/// let db = diffad_metrics::psnr(&a, &b, &[true, true, false, false])?;
/// assert!((db - 20.0).abs() < 1e-5);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn psnr(a: &[f32], b: &[f32], mask: &[bool]) -> Result<f64> {
    psnr_slice(a, b, mask)
}

/// [`psnr`] of two `ndarray` images of one shape (any layout: `(3, H, W)`,
/// `(H, W, 3)`, `(H, W)`, ...), with a mask that broadcasts to that shape
/// (NumPy rules: one flag per element, or e.g. an `(H, W)` mask for a
/// `(3, H, W)` image, applied to every channel). The same number as the
/// slice version on the row-major data.
///
/// Errors: [`Error::ShapeMismatch`] if `b` or the mask does not fit `a`,
/// then as [`psnr`].
///
/// ```
/// use ndarray::{array, Array3};
/// let a = Array3::<f32>::from_elem((3, 2, 2), 0.5);
/// let b = Array3::<f32>::from_elem((3, 2, 2), 0.4);
/// let mask = array![[true, false], [false, false]];
/// let db = diffad_metrics::psnr_view(a.view(), b.view(), mask.view())?;
/// assert!((db - 20.0).abs() < 1e-5);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn psnr_view<D: Dimension, E: Dimension>(
    a: ArrayView<'_, f32, D>,
    b: ArrayView<'_, f32, D>,
    mask: ArrayView<'_, bool, E>,
) -> Result<f64> {
    check_shape(0, "image b", a.shape(), b.shape())?;
    let mask = mask
        .broadcast(a.raw_dim())
        .ok_or_else(|| Error::ShapeMismatch {
            image: 0,
            what: "mask (does not broadcast to image a)",
            expected: a.shape().to_vec(),
            got: mask.shape().to_vec(),
        })?;
    psnr_slice(&row_major(&a), &row_major(&b), &row_major(&mask))
}

fn psnr_slice(a: &[f32], b: &[f32], mask: &[bool]) -> Result<f64> {
    if a.is_empty() {
        return Err(Error::EmptyInput { what: "image a" });
    }
    if b.len() != a.len() {
        return Err(Error::LengthMismatch {
            what: "image b",
            expected: a.len(),
            got: b.len(),
        });
    }
    if mask.is_empty() || !a.len().is_multiple_of(mask.len()) {
        return Err(Error::LengthMismatch {
            what: "mask (one flag per element or per pixel of each channel)",
            expected: a.len(),
            got: mask.len(),
        });
    }
    for values in [a, b] {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteScore {
                index,
                value: values[index],
            });
        }
    }
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for (plane_a, plane_b) in a.chunks(mask.len()).zip(b.chunks(mask.len())) {
        for ((&x, &y), &m) in plane_a.iter().zip(plane_b).zip(mask) {
            if m {
                let d = f64::from(x) - f64::from(y);
                sum += d * d;
                count += 1;
            }
        }
    }
    if count == 0 {
        return Err(Error::EmptyInput {
            what: "mask (no pixel selected)",
        });
    }
    let mse = sum / count as f64;
    Ok(if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_mask_and_identity() {
        // Two channel planes of two pixels; the mask keeps pixel 1 of each.
        let a = [0.0f32, 1.0, 0.0, 0.5];
        let b = [0.3f32, 0.9, 0.7, 0.4];
        let db = psnr(&a, &b, &[false, true]).unwrap();
        // Errors 0.1 and 0.1: MSE 0.01.
        assert!((db - 20.0).abs() < 1e-5, "{db}");
        assert_eq!(psnr(&a, &a, &[true, true]).unwrap(), f64::INFINITY);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            psnr(&[0.0; 3], &[0.0; 3], &[true, false]),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            psnr(&[0.0; 2], &[0.0; 2], &[false, false]),
            Err(Error::EmptyInput { .. })
        ));
        assert!(matches!(
            psnr(&[0.0, 1.0], &[f32::NAN, 0.0], &[true, true]),
            Err(Error::NonFiniteScore { index: 0, .. })
        ));
    }
}
