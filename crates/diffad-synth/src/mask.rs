//! Anomaly masks `M` (DRAEM, Zavrtanik et al. ICCV 2021, section 3.3; reused
//! unchanged by DiffAD, `docs/reference.md` §1) and foreground masks.
//!
//! DRAEM's procedure, per sample:
//! 1. `k_x, k_y ~ U{0, ..., 5}` independently (`torch.randint(0, 6)`), lattice
//!    resolution `(2^k_x, 2^k_y)`;
//! 2. `P = rand_perlin_2d((H, W), (2^k_x, 2^k_y))` ([`crate::perlin`]);
//! 3. `P` is rotated by `a ~ U[-90, 90]` degrees (imgaug `Affine(rotate=(-90, 90))`:
//!    bilinear, zero outside, about the image centre);
//! 4. `M = [P > 0.5]`.
//!
//! The mask may be empty (DRAEM then labels the sample normal); [`EmptyMaskPolicy`]
//! chooses between that and a bounded number of redraws.

use rand::{Rng, RngCore};

use crate::error::{check_size, Error, Result};
use crate::geometry::rotate_threshold;
use crate::image::{Mask, Plane, RgbImage};
use crate::perlin::{draw_angles, fill_perlin};
use crate::scratch::with_scratch;

thread_local! {
    static NOISE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Settings of the Perlin mask generator. Defaults are DRAEM's.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskConfig {
    /// Smallest exponent `k` of the per-axis lattice resolution `2^k` (DRAEM: 0).
    pub min_scale_exponent: u32,
    /// Largest exponent `k`, inclusive (DRAEM: 5, i.e. `torch.randint(0, 6)`).
    pub max_scale_exponent: u32,
    /// The noise is rotated by `U[-d, d]` degrees (DRAEM: 90).
    pub rotation_degrees: f32,
    /// Threshold on the rotated noise (DRAEM: 0.5).
    pub threshold: f32,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            min_scale_exponent: 0,
            max_scale_exponent: 5,
            rotation_degrees: 90.0,
            threshold: 0.5,
        }
    }
}

impl MaskConfig {
    /// Checks the settings: `min <= max <= 10` (a lattice of at most 1024
    /// cells per axis; DRAEM uses at most 32), finite non-negative rotation,
    /// finite threshold.
    pub fn validate(&self) -> Result<()> {
        if self.min_scale_exponent > self.max_scale_exponent || self.max_scale_exponent > 10 {
            return Err(Error::InvalidConfig {
                field: "scale exponents",
                reason: format!(
                    "need min <= max <= 10, got {}..={}",
                    self.min_scale_exponent, self.max_scale_exponent
                ),
            });
        }
        if !(self.rotation_degrees.is_finite() && self.rotation_degrees >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "rotation_degrees",
                reason: format!("{} is not a finite angle >= 0", self.rotation_degrees),
            });
        }
        if !self.threshold.is_finite() {
            return Err(Error::InvalidConfig {
                field: "threshold",
                reason: format!("{} is not finite", self.threshold),
            });
        }
        Ok(())
    }
}

/// What to do when a drawn mask has no pixel above the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyMaskPolicy {
    /// DRAEM: keep the empty mask; the sample becomes a normal one (label 0).
    KeepAsNormal,
    /// Redraw the noise up to `max_retries` more times; if every draw is empty
    /// the sample is normal as in DRAEM.
    Retry {
        /// Extra draws after the first.
        max_retries: u32,
    },
}

/// Draws one binary anomaly mask with DRAEM's procedure (module docs).
///
/// Randomness is consumed in this order: `k_x`, `k_y`, the gradient angles,
/// the rotation angle.
pub fn anomaly_mask<R: RngCore + ?Sized>(
    height: usize,
    width: usize,
    config: &MaskConfig,
    rng: &mut R,
) -> Result<Mask> {
    check_size(height, width)?;
    config.validate()?;
    let range = config.min_scale_exponent..=config.max_scale_exponent;
    let kx = rng.random_range(range.clone());
    let ky = rng.random_range(range);
    let res = (1usize << kx, 1usize << ky);
    let angles = draw_angles(res, rng);
    let d = config.rotation_degrees;
    let angle = if d > 0.0 {
        rng.random_range(-d..=d)
    } else {
        0.0
    };
    let thr = config.threshold;
    let mut data = vec![0.0f32; height * width];
    with_scratch(&NOISE, height * width, |noise| {
        fill_perlin(height, width, res, &angles, noise);
        if angle == 0.0 {
            for (m, &v) in data.iter_mut().zip(noise.iter()) {
                *m = if v > thr { 1.0 } else { 0.0 };
            }
        } else {
            // Rotation and threshold fused: no intermediate rotated plane.
            rotate_threshold(noise, height, width, angle, thr, &mut data);
        }
    });
    let mask = Plane::from_vec(height, width, data)?;
    Ok(mask)
}

/// Settings of the automatic foreground mask for objects on plain backgrounds.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoForeground {
    /// A pixel is foreground when its Euclidean RGB distance to the background
    /// colour (the per-channel median of the one-pixel image border) exceeds
    /// this (values in `[0, 1]` per channel; default 0.1).
    pub distance: f32,
    /// If less than this fraction of the image is foreground (e.g. a texture
    /// class whose border is not a background), the whole image is used
    /// instead (default 0.01).
    pub min_coverage: f32,
}

impl Default for AutoForeground {
    fn default() -> Self {
        Self {
            distance: 0.1,
            min_coverage: 0.01,
        }
    }
}

/// A simple foreground mask for objects on a plain background (the MVTec
/// object classes), in the spirit of DiffusionAD/MemSeg's foreground masks:
/// background colour = per-channel median of the border pixels; foreground =
/// pixels farther than `settings.distance` from it, then one 3x3 closing
/// (dilate, erode) to fill pin-holes. Falls back to an all-ones mask when the
/// foreground covers less than `settings.min_coverage`.
pub fn auto_foreground(image: &RgbImage, settings: &AutoForeground) -> Result<Mask> {
    image.check_finite()?;
    let (h, w) = (image.height(), image.width());
    let px = image.as_hwc();
    let mut border: [Vec<f32>; 3] = Default::default();
    for y in 0..h {
        for x in 0..w {
            if y == 0 || x == 0 || y + 1 == h || x + 1 == w {
                for (c, b) in border.iter_mut().enumerate() {
                    b.push(px[(y * w + x) * 3 + c]);
                }
            }
        }
    }
    let mut bg = [0.0f32; 3];
    for (c, b) in border.iter_mut().enumerate() {
        b.sort_by(f32::total_cmp);
        bg[c] = b[b.len() / 2];
    }
    let d2 = settings.distance * settings.distance;
    let raw: Vec<bool> = px
        .chunks_exact(3)
        .map(|p| {
            let dist: f32 = p.iter().zip(&bg).map(|(a, b)| (a - b) * (a - b)).sum();
            dist > d2
        })
        .collect();
    let closed = erode3(&dilate3(&raw, h, w), h, w);
    let data: Vec<f32> = closed.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    let mask = Plane::from_vec(h, w, data)?;
    if mask.coverage() < f64::from(settings.min_coverage) {
        Plane::filled(h, w, 1.0)
    } else {
        Ok(mask)
    }
}

fn dilate3(m: &[bool], h: usize, w: usize) -> Vec<bool> {
    morph3(m, h, w, true)
}

fn erode3(m: &[bool], h: usize, w: usize) -> Vec<bool> {
    morph3(m, h, w, false)
}

/// 3x3 dilation (`any`) or erosion (`all`), the neighbourhood clipped at the border.
fn morph3(m: &[bool], h: usize, w: usize, dilate: bool) -> Vec<bool> {
    let mut out = vec![false; m.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = !dilate;
            for yy in y.saturating_sub(1)..(y + 2).min(h) {
                for xx in x.saturating_sub(1)..(x + 2).min(w) {
                    let v = m[yy * w + xx];
                    if dilate {
                        acc |= v;
                    } else {
                        acc &= v;
                    }
                }
            }
            out[y * w + x] = acc;
        }
    }
    out
}
