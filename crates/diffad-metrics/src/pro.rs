//! AU-PRO, the area under the per-region-overlap curve of the MVTec AD
//! evaluation.

use rayon::prelude::*;

use ndarray::ArrayView2;

use crate::classification::check_two_classes;
use crate::error::{Error, Result};
use crate::ranked::{
    descending_key, sort_descending, sweep, ProSpec, Subset, MAX_REGIONS, REGION_MASK,
};
use crate::regions::{check_finite, check_sizes, pack_image_prefix, PackedImage, PREFIX_SHIFT};
use crate::view::{check_shape, row_major, width_height};

/// The integration limit of the MVTec AD benchmark (and of DiffAD's
/// evaluation): the PRO curve is integrated up to a false-positive rate of
/// 30 %.
pub const DEFAULT_FPR_LIMIT: f64 = 0.3;

/// Checks that an AU-PRO integration limit lies in `(0, 1]`.
pub(crate) fn check_fpr_limit(fpr_limit: f64) -> Result<()> {
    if fpr_limit > 0.0 && fpr_limit <= 1.0 {
        Ok(())
    } else {
        Err(Error::FprLimit(fpr_limit))
    }
}

/// Normalised area under the PRO curve up to `fpr_limit`, as defined by the
/// MVTec AD evaluation (Bergmann et al., IJCV 2021; `docs/reference.md` §5).
///
/// The ground-truth regions are the 8-connected components of every mask.
/// For each threshold `t` (each distinct score, from the highest down) the
/// curve has the point
///
/// ```text
/// FPR(t) = |{normal pixels with score >= t}| / |normal pixels|
/// PRO(t) = (1 / K) sum_k |{pixels of region k with score >= t}| / |region k|
/// ```
///
/// over all `K` regions of all images and all normal pixels of all images
/// (normal images included). The curve runs from `(0, 0)` through these
/// points to `(1, 1)`; it is integrated with the trapezoid rule up to
/// `FPR = fpr_limit`, with PRO interpolated linearly at the limit, and the
/// area is divided by `fpr_limit`, so a perfect map scores 1.
///
/// `maps[i]` and `masks[i]` are row-major `width` x `height` images. The
/// result is exact, but computed without sorting every pixel: a first
/// parallel pass counts normal pixels by the top 16 bits of their score; only
/// the pixels in the score range down to the first bucket in which the FPR
/// passes `fpr_limit` (about `fpr_limit` of the normal pixels plus the
/// defects above them) can influence the curve up to the limit, so only those
/// are packed (with their region), radix-sorted and swept.
///
/// Errors: no images, `maps` and `masks` of different lengths, a map or mask
/// that is not `width * height`, a non-finite map value (image and pixel
/// named), `fpr_limit` outside `(0, 1]`, or no region / no normal pixel.
///
/// ```
/// // One 3x3 image whose map finds the defect exactly: AU-PRO = 1.
/// let map = [0.0, 0.0, 0.0, 0.0, 0.9, 0.8, 0.0, 0.0, 0.0];
/// let mask = [false, false, false, false, true, true, false, false, false];
/// let pro = diffad_metrics::aupro(&[&map[..]], &[&mask[..]], 3, 3, 0.3)?;
/// assert!((pro - 1.0).abs() < 1e-12);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn aupro(
    maps: &[&[f32]],
    masks: &[&[bool]],
    width: usize,
    height: usize,
    fpr_limit: f64,
) -> Result<f64> {
    aupro_slices(maps, masks, width, height, fpr_limit)
}

/// [`aupro`] of `(H, W)` anomaly maps and masks given as `ndarray` views
/// (any memory layout), all of the shape of the first map; the same number
/// as the slice version.
///
/// Errors: [`Error::ShapeMismatch`] for a map or mask whose shape differs
/// from the first map's, then as [`aupro`].
///
/// ```
/// use ndarray::array;
/// let map = array![[0.0f32, 0.0, 0.0], [0.0, 0.9, 0.8], [0.0, 0.0, 0.0]];
/// let mask = map.mapv(|v| v > 0.5);
/// let pro = diffad_metrics::aupro_view(&[map.view()], &[mask.view()], 0.3)?;
/// assert!((pro - 1.0).abs() < 1e-12);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn aupro_view(
    maps: &[ArrayView2<'_, f32>],
    masks: &[ArrayView2<'_, bool>],
    fpr_limit: f64,
) -> Result<f64> {
    let Some(first) = maps.first() else {
        return aupro_slices(&[], &[], 0, 0, fpr_limit);
    };
    for (image, map) in maps.iter().enumerate() {
        check_shape(image, "anomaly map", first.shape(), map.shape())?;
    }
    for (image, mask) in masks.iter().enumerate() {
        check_shape(image, "mask", first.shape(), mask.shape())?;
    }
    let (width, height) = width_height(first);
    let maps: Vec<_> = maps.iter().map(row_major).collect();
    let masks: Vec<_> = masks.iter().map(row_major).collect();
    let maps: Vec<&[f32]> = maps.iter().map(|m| &m[..]).collect();
    let masks: Vec<&[bool]> = masks.iter().map(|m| &m[..]).collect();
    aupro_slices(&maps, &masks, width, height, fpr_limit)
}

fn aupro_slices(
    maps: &[&[f32]],
    masks: &[&[bool]],
    width: usize,
    height: usize,
    fpr_limit: f64,
) -> Result<f64> {
    check_fpr_limit(fpr_limit)?;
    if maps.is_empty() {
        return Err(Error::EmptyInput { what: "maps" });
    }
    if masks.len() != maps.len() {
        return Err(Error::LengthMismatch {
            what: "masks",
            expected: maps.len(),
            got: masks.len(),
        });
    }
    for (image, (map, mask)) in maps.iter().zip(masks).enumerate() {
        check_sizes(image, map.len(), mask.len(), width, height)?;
    }
    // Pass 1: validate the maps and count normal pixels by the top 16 bits
    // of their score key (descending score order).
    // One 256 KiB histogram per thread, not per rayon split.
    let per_thread = maps.len().div_ceil(rayon::current_num_threads().max(1));
    let histogram = maps
        .par_iter()
        .zip(masks.par_iter())
        .enumerate()
        .with_min_len(per_thread)
        .try_fold(
            || vec![0u32; 1 << (32 - PREFIX_SHIFT)],
            |mut hist, (image, (map, mask))| {
                check_finite(image, map, width)?;
                for (&s, &m) in map.iter().zip(mask.iter()) {
                    if !m {
                        hist[(descending_key(s) >> PREFIX_SHIFT) as usize] += 1;
                    }
                }
                Ok::<_, Error>(hist)
            },
        )
        .try_reduce(
            || vec![0u32; 1 << (32 - PREFIX_SHIFT)],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                Ok(a)
            },
        )?;
    let negatives: u64 = histogram.iter().map(|&c| u64::from(c)).sum();
    // The curve up to `fpr_limit` only involves pixels scoring at least as
    // high as the first threshold past the limit: keep the key buckets up to
    // the one in which the FPR passes the limit, drop the rest unsorted.
    let inverse_negatives = 1.0 / negatives as f64;
    let mut cut = u32::MAX >> PREFIX_SHIFT;
    let mut cumulative = 0u64;
    for (bucket, &count) in histogram.iter().enumerate() {
        cumulative += u64::from(count);
        if cumulative as f64 * inverse_negatives > fpr_limit {
            cut = bucket as u32;
            break;
        }
    }
    // Pass 2: label the regions of every image and pack its kept pixels.
    let images: Vec<(Vec<u64>, PackedImage)> = maps
        .par_iter()
        .zip(masks.par_iter())
        .map_init(
            || (Vec::new(), Vec::new()),
            |(labels, stack), (map, mask)| {
                let mut kept = Vec::with_capacity(map.len() / 2);
                let image =
                    pack_image_prefix(map, mask, width, height, cut, &mut kept, labels, stack);
                (kept, image)
            },
        )
        .collect();
    let positives: u64 = images.iter().map(|(_, i)| i.positives).sum();
    check_two_classes(positives, negatives)?;
    let regions: usize = images.iter().map(|(_, i)| i.region_sizes.len()).sum();
    if regions > MAX_REGIONS {
        return Err(Error::TooManyRegions(regions));
    }
    // Concatenate, turning image-local region numbers into global ones.
    let mut packed = Vec::with_capacity(images.iter().map(|(k, _)| k.len()).sum());
    let mut inverse_region_size = Vec::with_capacity(regions);
    for (kept, image) in images {
        let offset = inverse_region_size.len() as u64;
        packed.extend(kept.iter().map(|&w| {
            if w as u32 & REGION_MASK != 0 {
                w + offset
            } else {
                w
            }
        }));
        inverse_region_size.extend(image.region_sizes.iter().map(|&s| 1.0 / f64::from(s)));
    }
    sort_descending(&mut packed);
    let spec = ProSpec {
        inverse_region_size: &inverse_region_size,
        regions,
        fpr_limit,
    };
    let out = sweep(&packed, Subset::All, positives, negatives, Some(spec));
    Ok(out.aupro.unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_limits_and_shapes() {
        let map = [0.5f32; 4];
        let mask = [true, false, false, false];
        for limit in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(
                aupro(&[&map[..]], &[&mask[..]], 2, 2, limit),
                Err(Error::FprLimit(_))
            ));
        }
        assert!(matches!(
            aupro(&[&map[..]], &[&mask[..]], 3, 2, 0.3),
            Err(Error::SizeMismatch { image: 0, .. })
        ));
        assert!(matches!(
            aupro(&[&map[..]], &[], 2, 2, 0.3),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            aupro(&[], &[], 2, 2, 0.3),
            Err(Error::EmptyInput { .. })
        ));
        let empty = [false; 4];
        assert!(matches!(
            aupro(&[&map[..]], &[&empty[..]], 2, 2, 0.3),
            Err(Error::OneClass { positives: 0, .. })
        ));
    }

    #[test]
    fn hand_computed_curve() {
        // A 4x1 image with two regions: {0} (score 0.9) and {3} (score
        // 0.2); normal pixels 0.8, 0.1. Points: (0, 0) -> t=0.9 (0, 0.5) -> t=0.8 (0.5, 0.5)
        // -> t=0.2 (0.5, 1) -> t=0.1 (1, 1). Up to 0.3: area 0.5 * 0.3.
        let map = [0.9f32, 0.8, 0.1, 0.2];
        let mask = [true, false, false, true];
        let pro = aupro(&[&map[..]], &[&mask[..]], 4, 1, 0.3).unwrap();
        assert!((pro - 0.5).abs() < 1e-12, "{pro}");
        // Whole curve: 0.5 * 0.5 + 0.5 * 1 = 0.75.
        let pro = aupro(&[&map[..]], &[&mask[..]], 4, 1, 1.0).unwrap();
        assert!((pro - 0.75).abs() < 1e-12, "{pro}");
    }
}
