//! Ground-truth regions (8-connected components) and the packing of one
//! anomaly map with its mask.

use crate::error::{Error, Result};
use crate::ranked::{descending_key, pack, MAX_REGIONS};

/// Labels the 8-connected components of `mask` (row-major, `width` x
/// `height`), like `scipy.ndimage.label(mask, structure=np.ones((3, 3)))` as
/// used by the MVTec AD evaluation: pixels touching only at a corner belong
/// to the same region.
///
/// Writes `0` for background and `1..=k` for the `k` regions into `labels`
/// (numbered in raster order of their first pixel) and returns the region
/// sizes, `sizes[r - 1]` for label `r`. `stack` is reusable scratch space.
pub(crate) fn label_regions(
    mask: &[bool],
    width: usize,
    height: usize,
    labels: &mut Vec<u32>,
    stack: &mut Vec<usize>,
) -> Vec<u32> {
    labels.clear();
    labels.resize(mask.len(), 0);
    let mut sizes = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        sizes.push(0u32);
        let label = sizes.len() as u32;
        labels[start] = label;
        stack.clear();
        stack.push(start);
        let mut size = 0u32;
        while let Some(p) = stack.pop() {
            size += 1;
            let (x, y) = (p % width, p / width);
            let (x0, x1) = (x.saturating_sub(1), (x + 1).min(width - 1));
            let (y0, y1) = (y.saturating_sub(1), (y + 1).min(height - 1));
            for ny in y0..=y1 {
                for nx in x0..=x1 {
                    let q = ny * width + nx;
                    if mask[q] && labels[q] == 0 {
                        labels[q] = label;
                        stack.push(q);
                    }
                }
            }
        }
        if let Some(last) = sizes.last_mut() {
            *last = size;
        }
    }
    sizes
}

/// Checks that a map and its mask both have `width * height` pixels.
pub(crate) fn check_sizes(
    image: usize,
    map_len: usize,
    mask_len: usize,
    width: usize,
    height: usize,
) -> Result<()> {
    let expected = width.saturating_mul(height);
    for (what, got) in [("anomaly map", map_len), ("mask", mask_len)] {
        if got != expected {
            return Err(Error::SizeMismatch {
                image,
                what,
                width,
                height,
                expected,
                got,
            });
        }
    }
    if expected == 0 {
        return Err(Error::EmptyInput {
            what: "anomaly map",
        });
    }
    Ok(())
}

/// Returns the first non-finite pixel of a map as an error.
pub(crate) fn check_finite(image: usize, map: &[f32], width: usize) -> Result<()> {
    match map.iter().position(|v| !v.is_finite()) {
        Some(p) => Err(Error::NonFiniteMap {
            image,
            x: p % width,
            y: p / width,
            value: map[p],
        }),
        None => Ok(()),
    }
}

/// Per-image result of [`pack_image`].
pub(crate) struct PackedImage {
    /// Sizes of the image's regions, in local label order.
    pub region_sizes: Vec<u32>,
    /// Pixels inside regions.
    pub positives: u64,
    /// Normal pixels.
    pub negatives: u64,
}

/// Validates one map/mask pair, labels the mask's regions and writes the
/// packed pixels into `out` (`width * height` words). Region `r` of the image
/// gets the global region number `region_offset + r`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_image(
    image: usize,
    map: &[f32],
    mask: &[bool],
    width: usize,
    height: usize,
    group: u8,
    region_offset: usize,
    out: &mut [u64],
    labels: &mut Vec<u32>,
    stack: &mut Vec<usize>,
) -> Result<PackedImage> {
    check_sizes(image, map.len(), mask.len(), width, height)?;
    check_finite(image, map, width)?;
    let region_sizes = label_regions(mask, width, height, labels, stack);
    let total = region_offset + region_sizes.len();
    if total > MAX_REGIONS {
        return Err(Error::TooManyRegions(total));
    }
    let offset = region_offset as u32;
    let mut positives = 0u64;
    for ((o, &s), &l) in out.iter_mut().zip(map).zip(labels.iter()) {
        let region = if l == 0 {
            0
        } else {
            positives += 1;
            offset + l
        };
        *o = pack(s, group, region);
    }
    Ok(PackedImage {
        region_sizes,
        positives,
        negatives: map.len() as u64 - positives,
    })
}

/// Labels one image's regions and appends to `out` only the pixels whose
/// score key has its top 16 bits `<= cut` (the highest-scoring pixels; see
/// [`crate::aupro`]), with image-local region numbers. The map must have been
/// validated (size, finiteness).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_image_prefix(
    map: &[f32],
    mask: &[bool],
    width: usize,
    height: usize,
    cut: u32,
    out: &mut Vec<u64>,
    labels: &mut Vec<u32>,
    stack: &mut Vec<usize>,
) -> PackedImage {
    let region_sizes = label_regions(mask, width, height, labels, stack);
    let mut positives = 0u64;
    for (&s, &l) in map.iter().zip(labels.iter()) {
        positives += u64::from(l != 0);
        let key = descending_key(s);
        if key >> PREFIX_SHIFT <= cut {
            out.push((u64::from(key) << 32) | u64::from(l));
        }
    }
    PackedImage {
        region_sizes,
        positives,
        negatives: map.len() as u64 - positives,
    }
}

/// The prefix cut works on the top 16 bits of the score key.
pub(crate) const PREFIX_SHIFT: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn label(mask: &[u8], width: usize) -> (Vec<u32>, Vec<u32>) {
        let mask: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
        let (mut labels, mut stack) = (Vec::new(), Vec::new());
        let sizes = label_regions(&mask, width, mask.len() / width, &mut labels, &mut stack);
        (labels, sizes)
    }

    #[test]
    fn diagonal_neighbours_are_connected() {
        #[rustfmt::skip]
        let mask = [
            1, 0, 0, 0, 1,
            0, 1, 0, 1, 0,
            0, 0, 1, 0, 0,
            0, 0, 0, 0, 0,
            1, 1, 0, 0, 1,
        ];
        let (labels, sizes) = label(&mask, 5);
        assert_eq!(sizes, vec![5, 2, 1]);
        #[rustfmt::skip]
        let expected = [
            1, 0, 0, 0, 1,
            0, 1, 0, 1, 0,
            0, 0, 1, 0, 0,
            0, 0, 0, 0, 0,
            2, 2, 0, 0, 3,
        ];
        assert_eq!(labels, expected);
    }

    #[test]
    fn regions_do_not_wrap_around_rows() {
        // Pixel (3, 0) and (0, 1) are adjacent in memory, not in the image.
        let mask = [0, 0, 0, 1, 1, 0, 0, 0];
        let (_, sizes) = label(&mask, 4);
        assert_eq!(sizes, vec![1, 1]);
    }

    #[test]
    fn size_and_value_errors_say_where() {
        assert!(matches!(
            check_sizes(3, 12, 11, 4, 3),
            Err(Error::SizeMismatch {
                image: 3,
                what: "mask",
                got: 11,
                ..
            })
        ));
        assert!(matches!(
            check_finite(2, &[0.0, 1.0, 0.5, f32::NAN], 2),
            Err(Error::NonFiniteMap {
                image: 2,
                x: 1,
                y: 1,
                ..
            })
        ));
    }
}
