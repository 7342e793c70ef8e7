//! The image-level anomaly score of DRAEM and DiffAD.

use ndarray::ArrayView2;

use crate::error::{Error, Result};
use crate::regions::check_finite;
use crate::view::{row_major, width_height};

/// The mean-filter width DRAEM and DiffAD use for image scores.
pub const DRAEM_KERNEL: usize = 21;

/// Image anomaly score: the maximum of the `kernel` x `kernel` mean filter of
/// the anomaly map (DRAEM's `test_DRAEM.py`, kept by DiffAD;
/// `docs/reference.md` §5):
///
/// ```text
/// score = max_{i,j} (1 / k^2) sum_{|u| <= k/2, |v| <= k/2} map[i + u, j + v]
/// ```
///
/// exactly `max(torch.nn.functional.avg_pool2d(map, k, stride=1,
/// padding=k // 2))` with PyTorch's default `count_include_pad=True`: pixels
/// outside the image count as zeros and every window is divided by `k^2`.
/// For even `k` the output grid is one larger than the image, as in PyTorch.
/// Window sums come from a summed-area table in `f64`, so the cost is O(1)
/// per pixel whatever `k`. DRAEM/DiffAD use `k = 21` ([`DRAEM_KERNEL`]).
///
/// Errors: `map.len() != width * height`, an empty map, `kernel == 0`, or a
/// non-finite map value (reported as image 0 with its pixel position).
///
/// ```
/// // A single hot pixel of value 9 in a 3x3 kernel: the best window holds it once.
/// let mut map = vec![0.0f32; 25];
/// map[12] = 9.0;
/// let score = diffad_metrics::image_score(&map, 5, 5, 3)?;
/// assert_eq!(score, 1.0);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn image_score(map: &[f32], width: usize, height: usize, kernel: usize) -> Result<f32> {
    image_score_slice(map, width, height, kernel)
}

/// [`image_score`] of an `(H, W)` anomaly map given as an `ndarray` view
/// (any memory layout); the same number as the slice version.
///
/// ```
/// use ndarray::Array2;
/// let mut map = Array2::<f32>::zeros((5, 5));
/// map[[2, 2]] = 9.0;
/// assert_eq!(diffad_metrics::image_score_view(map.view(), 3)?, 1.0);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn image_score_view(map: ArrayView2<'_, f32>, kernel: usize) -> Result<f32> {
    let (width, height) = width_height(&map);
    image_score_slice(&row_major(&map), width, height, kernel)
}

fn image_score_slice(map: &[f32], width: usize, height: usize, kernel: usize) -> Result<f32> {
    if kernel == 0 {
        return Err(Error::Kernel(kernel));
    }
    crate::regions::check_sizes(0, map.len(), map.len(), width, height)?;
    check_finite(0, map, width)?;
    // table[(y) * (width + 1) + x] = sum of map[..y, ..x].
    let stride = width + 1;
    let mut table = vec![0.0f64; stride * (height + 1)];
    for y in 0..height {
        let mut row_sum = 0.0f64;
        for x in 0..width {
            row_sum += f64::from(map[y * width + x]);
            table[(y + 1) * stride + x + 1] = table[y * stride + x + 1] + row_sum;
        }
    }
    let pad = kernel / 2;
    // Output position o covers input positions [o - pad, o - pad + kernel),
    // clipped to the image (the clipped part is zero padding).
    let window = |o: usize, len: usize| {
        let start = o.saturating_sub(pad).min(len);
        let end = (o + kernel).saturating_sub(pad).min(len);
        (start, end)
    };
    let out_height = height + 2 * pad + 1 - kernel;
    let out_width = width + 2 * pad + 1 - kernel;
    let mut best = f64::NEG_INFINITY;
    for oy in 0..out_height {
        let (y0, y1) = window(oy, height);
        for ox in 0..out_width {
            let (x0, x1) = window(ox, width);
            let sum = table[y1 * stride + x1] - table[y0 * stride + x1] - table[y1 * stride + x0]
                + table[y0 * stride + x0];
            best = best.max(sum);
        }
    }
    Ok((best / (kernel * kernel) as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct evaluation of the padded mean filter, for comparison.
    fn naive(map: &[f32], width: usize, height: usize, k: usize) -> f32 {
        let pad = k as isize / 2;
        let (w, h) = (width as isize, height as isize);
        let mut best = f64::NEG_INFINITY;
        for oy in 0..(h + 2 * pad + 1 - k as isize) {
            for ox in 0..(w + 2 * pad + 1 - k as isize) {
                let mut sum = 0.0f64;
                for y in oy - pad..oy - pad + k as isize {
                    for x in ox - pad..ox - pad + k as isize {
                        if (0..h).contains(&y) && (0..w).contains(&x) {
                            sum += f64::from(map[(y * w + x) as usize]);
                        }
                    }
                }
                best = best.max(sum / (k * k) as f64);
            }
        }
        best as f32
    }

    #[test]
    fn matches_direct_filter_for_odd_and_even_kernels() {
        let (width, height) = (7, 5);
        let map: Vec<f32> = (0..width * height)
            .map(|i| ((i * 37 % 11) as f32 - 4.0) / 3.0)
            .collect();
        for k in 1..=12 {
            let fast = image_score(&map, width, height, k).unwrap();
            let slow = naive(&map, width, height, k);
            assert!((fast - slow).abs() <= 1e-6 * slow.abs().max(1.0), "k={k}");
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(
            image_score(&[1.0; 4], 2, 2, 0),
            Err(Error::Kernel(0))
        ));
        assert!(matches!(
            image_score(&[1.0; 4], 3, 2, 3),
            Err(Error::SizeMismatch { got: 4, .. })
        ));
        assert!(matches!(
            image_score(&[1.0, f32::NAN], 2, 1, 3),
            Err(Error::NonFiniteMap { x: 1, y: 0, .. })
        ));
    }
}
