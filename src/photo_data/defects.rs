//! The defects of the real-photograph benchmark, drawn into clean test crops.
//!
//! Every kind is one that DRAEM's synthesis (Perlin-shaped blends of another
//! texture, `diffad-synth`) never produces:
//!
//! | kind | what changes | mask |
//! |---|---|---|
//! | `scratch` | 1-2 curved strokes 1-2 px wide, 15-30 % lighter or darker | stroke coverage >= 0.3 |
//! | `stain` | a soft irregular blotch: brightness and hue change by 4-10 % | blotch opacity >= 0.2 |
//! | `hole` | missing material: a dark irregular pit with a rim lit on one side and shadowed on the other | pit and rim |
//! | `warp` | the texture itself is displaced by a smooth field inside a disc (swirl, bulge or shear); no colour is added | displacement >= 0.5 px |
//! | `contamination` | 3-8 small foreign particles and 0-2 fibres of one foreign colour, clustered | particle coverage >= 0.3 |
//!
//! Each kind returns the defective image and its mask; every pixel outside
//! the mask is reset to the clean crop, so the mask covers every changed
//! pixel (and, by construction, only pixels the defect touched). Sizes scale
//! with the image side `n` (the drawings at 64 and 128 pixels agree), except
//! the scratch width, which stays 1-2 px.

use std::f32::consts::{PI, TAU};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Mask, RgbImage};
use crate::error::{Error, Result};

/// The defect kinds of the benchmark, in folder order.
pub const PHOTO_DEFECTS: [PhotoDefect; 5] = [
    PhotoDefect::Scratch,
    PhotoDefect::Stain,
    PhotoDefect::Hole,
    PhotoDefect::Warp,
    PhotoDefect::Contamination,
];

/// A defect process of the real-photograph benchmark (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhotoDefect {
    /// Thin curved strokes, slightly lighter or darker.
    Scratch,
    /// A low-contrast, soft-edged blotch of changed brightness and hue.
    Stain,
    /// Missing material: a dark pit with a shaded rim.
    Hole,
    /// A local geometric warp of the texture itself.
    Warp,
    /// Small foreign particles and fibres.
    Contamination,
}

/// Draws with fewer masked pixels than this (at 64x64, scaled by area) are
/// redrawn from the same stream.
const MIN_MASKED_AT_64: f32 = 6.0;
/// Redraws before giving up.
const ATTEMPTS: usize = 32;

impl PhotoDefect {
    /// The `test/<defect>` folder name.
    pub fn name(self) -> &'static str {
        match self {
            PhotoDefect::Scratch => "scratch",
            PhotoDefect::Stain => "stain",
            PhotoDefect::Hole => "hole",
            PhotoDefect::Warp => "warp",
            PhotoDefect::Contamination => "contamination",
        }
    }

    /// Draws the defect into a copy of `clean` and returns it with its mask
    /// (unmasked pixels are exactly those of `clean`). A draw whose mask is
    /// nearly empty (a stroke that left the image) is redrawn from `rng`.
    pub fn apply(self, clean: &RgbImage, rng: &mut ChaCha8Rng) -> Result<(RgbImage, Mask)> {
        let (h, w) = (clean.height(), clean.width());
        let n = h.min(w) as f32;
        let min_masked = (MIN_MASKED_AT_64 * (n / 64.0).powi(2)).max(1.0) as usize;
        for _ in 0..ATTEMPTS {
            let mut altered = clean.clone();
            let mask = match self {
                PhotoDefect::Scratch => scratch(&mut altered, rng),
                PhotoDefect::Stain => stain(&mut altered, rng),
                PhotoDefect::Hole => hole(&mut altered, rng),
                PhotoDefect::Warp => warp(clean, &mut altered, rng),
                PhotoDefect::Contamination => contamination(&mut altered, rng),
            };
            if mask.iter().filter(|&&m| m).count() >= min_masked {
                return finalize(clean, altered, &mask);
            }
        }
        Err(Error::Shape(format!(
            "could not place a {} defect on a {w}x{h} image",
            self.name()
        )))
    }
}

/// Clamps the altered image to `[0, 1]`, resets every unmasked pixel to the
/// clean one, and builds the mask.
fn finalize(clean: &RgbImage, mut altered: RgbImage, mask: &[bool]) -> Result<(RgbImage, Mask)> {
    let (h, w) = (clean.height(), clean.width());
    for ((px, orig), &m) in altered
        .as_hwc_mut()
        .chunks_exact_mut(3)
        .zip(clean.as_hwc().chunks_exact(3))
        .zip(mask)
    {
        if m {
            px.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        } else {
            px.copy_from_slice(orig);
        }
    }
    Ok((altered, Mask::from_bool(h, w, mask)?))
}

/// A random point in `[lo, hi) * side` on both axes, as `(y, x)`.
fn point(rng: &mut ChaCha8Rng, h: usize, w: usize, lo: f32, hi: f32) -> (f32, f32) {
    (
        rng.random_range(lo..hi) * h as f32,
        rng.random_range(lo..hi) * w as f32,
    )
}

/// A smooth curved path: `length` pixels from `(y, x)` in steps of 0.5 px,
/// turning by `bend` radians per pixel.
fn curve(start: (f32, f32), mut angle: f32, bend: f32, length: f32) -> Vec<(f32, f32)> {
    let (mut y, mut x) = start;
    let steps = (length / 0.5).ceil() as usize;
    let mut points = Vec::with_capacity(steps + 1);
    points.push((y, x));
    for _ in 0..steps {
        y += 0.5 * angle.sin();
        x += 0.5 * angle.cos();
        angle += 0.5 * bend;
        points.push((y, x));
    }
    points
}

/// Adds to `cov` the antialiased coverage of a stroke of half-width
/// `half_width` along `points`: `clamp(half_width + 0.5 - distance, 0, 1)`,
/// distances measured from pixel centres; overlapping strokes take the max.
fn stroke_coverage(cov: &mut [f32], h: usize, w: usize, points: &[(f32, f32)], half_width: f32) {
    let reach = half_width + 1.0;
    let (mut y0, mut y1, mut x0, mut x1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for &(y, x) in points {
        (y0, y1, x0, x1) = (y0.min(y), y1.max(y), x0.min(x), x1.max(x));
    }
    let rows =
        ((y0 - reach).floor().max(0.0) as usize)..((y1 + reach).ceil().max(0.0) as usize).min(h);
    let cols =
        ((x0 - reach).floor().max(0.0) as usize)..((x1 + reach).ceil().max(0.0) as usize).min(w);
    for py in rows {
        for px in cols.clone() {
            let (cy, cx) = (py as f32 + 0.5, px as f32 + 0.5);
            let d = points
                .windows(2)
                .map(|s| segment_distance((cy, cx), s[0], s[1]))
                .fold(f32::MAX, f32::min);
            let c = (half_width + 0.5 - d).clamp(0.0, 1.0);
            let slot = &mut cov[py * w + px];
            *slot = slot.max(c);
        }
    }
}

/// Distance from `p` to the segment `a b`.
fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dy, dx) = (b.0 - a.0, b.1 - a.1);
    let len2 = dy * dy + dx * dx;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dy + (p.1 - a.1) * dx) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qy, qx) = (a.0 + t * dy - p.0, a.1 + t * dx - p.1);
    (qy * qy + qx * qx).sqrt()
}

/// Radius factor of a blob with an irregular border:
/// `1 + sum_k a_k sin((k + 2) phi + p_k)`.
fn irregular_radius(harmonics: &[(f32, f32)], phi: f32) -> f32 {
    1.0 + harmonics
        .iter()
        .enumerate()
        .map(|(k, (a, p))| a * ((k as f32 + 2.0) * phi + p).sin())
        .sum::<f32>()
}

fn harmonics(rng: &mut ChaCha8Rng, amplitude: f32) -> Vec<(f32, f32)> {
    (0..3)
        .map(|_| (rng.random_range(0.0..amplitude), rng.random_range(0.0..TAU)))
        .collect()
}

/// Applies `f(value, coverage)` to every pixel with positive coverage and
/// returns the mask `coverage >= threshold`.
fn paint(
    img: &mut RgbImage,
    cov: &[f32],
    threshold: f32,
    f: impl Fn(usize, f32, f32) -> f32,
) -> Vec<bool> {
    for (px, &c) in img.as_hwc_mut().chunks_exact_mut(3).zip(cov) {
        if c > 0.0 {
            for (ch, v) in px.iter_mut().enumerate() {
                *v = f(ch, *v, c);
            }
        }
    }
    cov.iter().map(|&c| c >= threshold).collect()
}

fn scratch(img: &mut RgbImage, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let (h, w) = (img.height(), img.width());
    let n = h.min(w) as f32;
    let mut cov = vec![0.0; h * w];
    for _ in 0..rng.random_range(1..=2) {
        let start = point(rng, h, w, 0.15, 0.85);
        let angle = rng.random_range(0.0..TAU);
        // A gentle bend: the stroke turns by at most ~1.5 rad over the image.
        let bend = rng.random_range(-1.5..1.5) / n;
        let length = rng.random_range(0.3..0.7) * n;
        // Width 1-2 px at every image size.
        let half_width = rng.random_range(0.5..1.0);
        stroke_coverage(
            &mut cov,
            h,
            w,
            &curve(start, angle, bend, length),
            half_width,
        );
    }
    let lighter = rng.random_bool(0.5);
    let amount: f32 = rng.random_range(0.15..0.3);
    paint(img, &cov, 0.3, |_, v, c| {
        if lighter {
            v + amount * c * (1.0 - v)
        } else {
            v * (1.0 - amount * c)
        }
    })
}

fn stain(img: &mut RgbImage, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let (h, w) = (img.height(), img.width());
    let n = h.min(w) as f32;
    let (cy, cx) = point(rng, h, w, 0.25, 0.75);
    let radius = rng.random_range(0.1..0.22) * n;
    let border = harmonics(rng, 0.18);
    // Brightness change of 4-10 % either way, plus a hue shift of up to 4 %
    // per channel.
    let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let brightness: f32 = sign * rng.random_range(0.04..0.10);
    let tint: [f32; 3] = [
        rng.random_range(-0.04..0.04),
        rng.random_range(-0.04..0.04),
        rng.random_range(-0.04..0.04),
    ];
    let mut alpha = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
            let d = (dy * dy + dx * dx).sqrt() / (radius * irregular_radius(&border, dy.atan2(dx)));
            // Full strength inside 0.5, a smoothstep fall-off to 0 at 1.
            let t = ((1.0 - d) / 0.5).clamp(0.0, 1.0);
            alpha[y * w + x] = t * t * (3.0 - 2.0 * t);
        }
    }
    paint(img, &alpha, 0.2, |ch, v, a| {
        v * (1.0 + a * (brightness + tint[ch]))
    })
}

fn hole(img: &mut RgbImage, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let (h, w) = (img.height(), img.width());
    let n = h.min(w) as f32;
    let (cy, cx) = point(rng, h, w, 0.25, 0.75);
    let radius = rng.random_range(0.05..0.11) * n;
    let border = harmonics(rng, 0.2);
    // Rim width in pixels (1 px at 64x64) and the light direction.
    let rim = rng.random_range(1.0..1.8) * (n / 64.0);
    let light: f32 = rng.random_range(0.0..TAU);
    let depth: f32 = rng.random_range(0.03..0.08);
    let mut mask = vec![false; h * w];
    let clean = img.clone();
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
            let phi = dy.atan2(dx);
            let r = radius * irregular_radius(&border, phi);
            let dist = (dy * dy + dx * dx).sqrt();
            // cos of the angle between this point's direction and the light.
            let facing = (phi - light).cos();
            let i = y * w + x;
            if dist <= r {
                mask[i] = true;
                // The pit's far wall catches some light: darker towards the
                // light's side, a faint trace of the surface inside.
                let wall = 0.5 - 0.5 * facing * (dist / r);
                for c in 0..3 {
                    let v = clean.view()[[y, x, c]];
                    img.view_mut()[[y, x, c]] = depth + 0.12 * wall + 0.08 * v;
                }
            } else if dist <= r + rim {
                mask[i] = true;
                // The rim: lit where it faces the light, shadowed opposite.
                let factor = 1.0 + 0.45 * facing;
                for c in 0..3 {
                    let v = clean.view()[[y, x, c]];
                    img.view_mut()[[y, x, c]] = if factor >= 1.0 {
                        v + (factor - 1.0) * (1.0 - v)
                    } else {
                        v * factor
                    };
                }
            }
        }
    }
    mask
}

/// Bilinear sample of `img` at `(y, x)` (pixel centres at integers),
/// clamped to the border.
fn bilinear(img: &RgbImage, y: f32, x: f32, c: usize) -> f32 {
    let (h, w) = (img.height(), img.width());
    let y = y.clamp(0.0, (h - 1) as f32);
    let x = x.clamp(0.0, (w - 1) as f32);
    let (y0, x0) = (y.floor() as usize, x.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (fy, fx) = (y - y0 as f32, x - x0 as f32);
    let v = img.view();
    let top = v[[y0, x0, c]] * (1.0 - fx) + v[[y0, x1, c]] * fx;
    let bottom = v[[y1, x0, c]] * (1.0 - fx) + v[[y1, x1, c]] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Displacement threshold (pixels) of the warp's mask.
pub const WARP_MASK_THRESHOLD: f32 = 0.5;

fn warp(clean: &RgbImage, img: &mut RgbImage, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let (h, w) = (img.height(), img.width());
    let n = h.min(w) as f32;
    let scale = n / 64.0;
    let (cy, cx) = point(rng, h, w, 0.25, 0.75);
    let radius = rng.random_range(0.12..0.22) * n;
    // The weight (1 - (r/R)^2)^2 is smooth at the disc's edge and peaks at
    // the centre; each kind's amplitude gives a peak displacement of about
    // 2-4.5 px at 64x64.
    let kind = rng.random_range(0..3);
    let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let swirl = sign * rng.random_range(2.0..4.5) * scale / (0.286 * radius);
    let bulge = sign * rng.random_range(2.0..4.5) * scale / 0.286;
    let shear_angle: f32 = rng.random_range(0.0..TAU);
    let shear = rng.random_range(2.0..4.5) * scale;
    let mut mask = vec![false; h * w];
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 - cy, x as f32 - cx);
            let r = (dy * dy + dx * dx).sqrt();
            if r >= radius {
                continue;
            }
            let q = 1.0 - (r / radius).powi(2);
            let weight = q * q;
            // Where this pixel reads the texture from, relative to itself.
            let (sy, sx) = match kind {
                0 => {
                    let (sin, cos) = (swirl * weight).sin_cos();
                    (sin * dx + cos * dy - dy, cos * dx - sin * dy - dx)
                }
                1 => {
                    let k = bulge * weight / radius;
                    (k * dy, k * dx)
                }
                _ => (
                    shear * weight * shear_angle.sin(),
                    shear * weight * shear_angle.cos(),
                ),
            };
            if (sy * sy + sx * sx).sqrt() < WARP_MASK_THRESHOLD {
                continue;
            }
            mask[y * w + x] = true;
            for c in 0..3 {
                img.view_mut()[[y, x, c]] = bilinear(clean, y as f32 + sy, x as f32 + sx, c);
            }
        }
    }
    mask
}

/// Foreign colours: soot, lint, rust, blue fibre, green fleck.
const FOREIGN: [[f32; 3]; 5] = [
    [0.05, 0.05, 0.06],
    [0.95, 0.94, 0.90],
    [0.55, 0.26, 0.10],
    [0.15, 0.25, 0.65],
    [0.20, 0.55, 0.15],
];

fn contamination(img: &mut RgbImage, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let (h, w) = (img.height(), img.width());
    let n = h.min(w) as f32;
    let scale = n / 64.0;
    let (cy, cx) = point(rng, h, w, 0.2, 0.8);
    let spread = rng.random_range(0.06..0.16) * n;
    let color = FOREIGN[rng.random_range(0..FOREIGN.len())];
    let opacity: f32 = rng.random_range(0.8..1.0);
    let mut cov = vec![0.0; h * w];
    for _ in 0..rng.random_range(3..=8) {
        let (a, r) = (
            rng.random_range(0.0..TAU),
            spread * rng.random::<f32>().sqrt(),
        );
        let (py, px) = (cy + r * a.sin(), cx + r * a.cos());
        let radius = rng.random_range(0.4..1.6) * scale;
        // A particle: a disc (a stroke of one point).
        stroke_coverage(&mut cov, h, w, &[(py, px), (py, px)], radius);
    }
    for _ in 0..rng.random_range(0..=2) {
        let (a, r) = (rng.random_range(0.0..TAU), spread * rng.random::<f32>());
        let start = (cy + r * a.sin(), cx + r * a.cos());
        let length = rng.random_range(0.08..0.2) * n;
        let bend = rng.random_range(-PI..PI) / length;
        let fibre = curve(start, rng.random_range(0.0..TAU), bend, length);
        stroke_coverage(&mut cov, h, w, &fibre, rng.random_range(0.35..0.6) * scale);
    }
    paint(img, &cov, 0.3, |ch, v, c| {
        let a = opacity * c;
        (1.0 - a) * v + a * color[ch]
    })
}
