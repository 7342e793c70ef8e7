//! Gaussian smoothing of anomaly maps before the pixel metrics.

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::regions::check_finite;
use crate::view::{row_major, width_height};

/// The map smoothed by a Gaussian of standard deviation `sigma` pixels, as
/// `scipy.ndimage.gaussian_filter(map, sigma)` computes it (mode `reflect`,
/// truncated at 4 sigma):
///
/// ```text
/// g[i] = exp(-i^2 / (2 sigma^2)) / sum_j exp(-j^2 / (2 sigma^2)),   |i| <= r = floor(4 sigma + 0.5)
/// out  = g *_rows (g *_columns map)
/// ```
///
/// with the map extended beyond its edges by reflection about the edge,
/// `(d c b a | a b c d | d c b a)`. The sums run in `f64`. `sigma = 0` returns the
/// map unchanged.
///
/// This is not part of DiffAD's or DRAEM's evaluation, which score the raw
/// segmentation output. Smoothing the map is the usual last step of other
/// anomaly detectors (PatchCore and anomalib blur with sigma 4 at 224-256
/// pixels), which this crate's users may want to match.
///
/// Errors: an empty map, a negative or non-finite `sigma`, or a non-finite map value.
///
/// ```
/// use ndarray::Array2;
/// let mut map = Array2::<f32>::zeros((9, 9));
/// map[[4, 4]] = 1.0;
/// let out = diffad_metrics::gaussian_smooth(map.view(), 1.0)?;
/// // The mass is kept and spread around the centre.
/// assert!((out.sum() - 1.0).abs() < 1e-6);
/// assert!(out[[4, 4]] < 0.2 && out[[4, 5]] > 0.0);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn gaussian_smooth(map: ArrayView2<'_, f32>, sigma: f64) -> Result<Array2<f32>> {
    let (width, height) = width_height(&map);
    if width == 0 || height == 0 {
        return Err(Error::EmptyInput { what: "map" });
    }
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(Error::Sigma(sigma));
    }
    let values = row_major(&map);
    check_finite(0, &values, width)?;
    if sigma == 0.0 {
        return Ok(map.to_owned());
    }
    let kernel = gaussian_kernel(sigma);
    // Along rows (x), then along columns (y).
    let mut rows = vec![0.0f64; width * height];
    for y in 0..height {
        let line: Vec<f64> = values[y * width..(y + 1) * width]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        correlate(&line, &kernel, |x, v| rows[y * width + x] = v);
    }
    let mut out = Array2::<f32>::zeros((height, width));
    for x in 0..width {
        let line: Vec<f64> = (0..height).map(|y| rows[y * width + x]).collect();
        correlate(&line, &kernel, |y, v| out[[y, x]] = v as f32);
    }
    Ok(out)
}

/// The normalised taps `g[-r..=r]` (index `i + r`).
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let r = (4.0 * sigma + 0.5).floor() as isize;
    let taps: Vec<f64> = (-r..=r)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = taps.iter().sum();
    taps.into_iter().map(|t| t / total).collect()
}

/// `emit(i, sum_k kernel[k] line[reflect(i + k - r)])` for every `i`.
fn correlate(line: &[f64], kernel: &[f64], mut emit: impl FnMut(usize, f64)) {
    let n = line.len() as isize;
    let r = (kernel.len() / 2) as isize;
    // Reflection about the edges, `(d c b a | a b c d | d c b a)`, period 2n.
    let reflect = |i: isize| -> usize {
        let m = i.rem_euclid(2 * n);
        (if m < n { m } else { 2 * n - 1 - m }) as usize
    };
    for i in 0..n {
        let sum: f64 = kernel
            .iter()
            .enumerate()
            .map(|(k, &g)| g * line[reflect(i + k as isize - r)])
            .sum();
        emit(i as usize, sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct 2-D sum with the outer-product kernel, for comparison.
    fn naive(map: &Array2<f32>, sigma: f64) -> Array2<f64> {
        let g = gaussian_kernel(sigma);
        let r = (g.len() / 2) as isize;
        let (h, w) = (map.nrows() as isize, map.ncols() as isize);
        let fold = |i: isize, n: isize| {
            let m = i.rem_euclid(2 * n);
            (if m < n { m } else { 2 * n - 1 - m }) as usize
        };
        Array2::from_shape_fn((h as usize, w as usize), |(y, x)| {
            let mut s = 0.0;
            for u in -r..=r {
                for v in -r..=r {
                    let (yy, xx) = (fold(y as isize + u, h), fold(x as isize + v, w));
                    s += g[(u + r) as usize] * g[(v + r) as usize] * f64::from(map[[yy, xx]]);
                }
            }
            s
        })
    }

    #[test]
    fn equals_the_direct_two_dimensional_sum() {
        // Sizes below the kernel's reach too (several reflections).
        for (h, w, sigma) in [(7, 9, 1.0), (3, 2, 1.5), (16, 5, 0.6), (1, 4, 2.0)] {
            let map = Array2::from_shape_fn((h, w), |(y, x)| ((y * 7 + x * 3) % 5) as f32 * 0.25);
            let out = gaussian_smooth(map.view(), sigma).unwrap();
            let reference = naive(&map, sigma);
            for (a, b) in out.iter().zip(reference.iter()) {
                assert!((f64::from(*a) - b).abs() < 1e-6, "{h}x{w} sigma {sigma}");
            }
        }
    }

    #[test]
    fn keeps_constants_and_the_identity_at_zero() {
        let map = Array2::from_elem((6, 5), 0.375f32);
        let out = gaussian_smooth(map.view(), 1.3).unwrap();
        assert!(out.iter().all(|v| (v - 0.375).abs() < 1e-6));
        let ramp = Array2::from_shape_fn((4, 4), |(y, x)| (y * 4 + x) as f32);
        assert_eq!(gaussian_smooth(ramp.view(), 0.0).unwrap(), ramp);
        // The reflection keeps the total of any map.
        let out = gaussian_smooth(ramp.view(), 0.8).unwrap();
        assert!((out.sum() - ramp.sum()).abs() < 1e-3);
    }

    #[test]
    fn scipy_kernel_width() {
        // scipy: radius int(4 * sigma + 0.5).
        assert_eq!(gaussian_kernel(1.0).len(), 9);
        assert_eq!(gaussian_kernel(1.5).len(), 13);
        assert_eq!(gaussian_kernel(0.1).len(), 1);
        assert!((gaussian_kernel(2.0).iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_input_is_an_error() {
        let map = Array2::<f32>::zeros((3, 3));
        assert!(matches!(
            gaussian_smooth(map.view(), -1.0),
            Err(Error::Sigma(_))
        ));
        assert!(matches!(
            gaussian_smooth(map.view(), f64::NAN),
            Err(Error::Sigma(_))
        ));
        let empty = Array2::<f32>::zeros((0, 3));
        assert!(gaussian_smooth(empty.view(), 1.0).is_err());
        let mut nan = Array2::<f32>::zeros((3, 3));
        nan[[1, 2]] = f32::NAN;
        assert!(gaussian_smooth(nan.view(), 1.0).is_err());
    }
}
