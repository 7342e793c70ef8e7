//! Geometry shared by the mask generator, the synthesizer and the
//! augmenters: bilinear rotation about the image centre (imgaug's
//! `Affine(rotate=...)`), a rotation fused with a threshold (the Perlin mask
//! step of DRAEM, `docs/reference.md` §1), and bilinear resizing with
//! OpenCV's `INTER_LINEAR` sampling positions (DRAEM's `cv2.resize`).
//!
//! The kernels work on plain HWC slices with `C` channels, so they serve
//! `f32` images ([`RgbImage`], [`Plane`]) and 8-bit `image` buffers alike.

use crate::error::{check_size, Error, Result};
use crate::image::{Plane, RgbImage};
use crate::scratch::with_scratch;

thread_local! {
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static CLASS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static ABOVE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static SAT: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl RgbImage {
    /// Bilinear resize in `f32` with OpenCV's `INTER_LINEAR` sampling
    /// positions (half-pixel centres, no antialiasing), as DRAEM's
    /// `cv2.resize`.
    pub fn resize(&self, height: usize, width: usize) -> Result<Self> {
        check_size(height, width)?;
        if height == self.height() && width == self.width() {
            return Ok(self.clone());
        }
        let data = resize_bilinear::<3>(self.as_hwc(), self.height(), self.width(), height, width);
        Self::from_hwc(height, width, data)
    }

    /// Rotates about the image centre by `degrees` (positive = clockwise on
    /// screen), bilinear, zero (black) outside, as imgaug's
    /// `Affine(rotate=...)` with its defaults `order=1, cval=0, mode="constant"`.
    pub fn rotated(&self, degrees: f32) -> Self {
        let (h, w) = (self.height(), self.width());
        let mut out = Self::zeros_unchecked(h, w);
        rotate_bilinear::<3>(self.as_hwc(), h, w, degrees, out.as_hwc_mut());
        out
    }
}

impl Plane {
    /// Rotates about the centre like [`RgbImage::rotated`].
    pub fn rotated(&self, degrees: f32) -> Self {
        let (h, w) = (self.height(), self.width());
        let mut out = Self::zeros_unchecked(h, w);
        rotate_bilinear::<1>(self.as_slice(), h, w, degrees, out.as_mut_slice());
        out
    }
}

/// Bilinear rotation of a `C`-channel HWC buffer about the pixel centre
/// `((W - 1) / 2, (H - 1) / 2)` (imgaug's centre `W/2 - 0.5`), zero outside.
///
/// The output pixel `(x, y)` samples the source at
/// `x_s = c_x + cos(a)(x - c_x) + sin(a)(y - c_y)`,
/// `y_s = c_y - sin(a)(x - c_x) + cos(a)(y - c_y)`, i.e. the content turns
/// clockwise on screen (y down) for positive `a`. DRAEM draws the angle
/// symmetrically, so the sign convention does not change any distribution.
/// Source pixels beyond the edge count as 0 in the interpolation (OpenCV's
/// `BORDER_CONSTANT`, which imgaug's `Affine` uses).
pub(crate) fn rotate_bilinear<const C: usize>(
    src: &[f32],
    h: usize,
    w: usize,
    degrees: f32,
    out: &mut [f32],
) {
    rotate_with::<C, f32>(src, h, w, degrees, |i, v| {
        out[i * C..(i + 1) * C].copy_from_slice(&v)
    });
}

/// The rotation of [`rotate_bilinear`], handing each output pixel `i`
/// (row-major index) whose sample position lies inside the source, and its
/// `C` values, to `emit`. Pixels not emitted are 0; callers pre-fill.
///
/// The source is first copied into a buffer with a one-pixel zero border, so
/// every sample position inside `(-1, W) x (-1, H)` reads four in-bounds
/// taps; the range of such positions is solved per row, so the inner loop
/// has no bounds branches.
pub(crate) fn rotate_with<const C: usize, S: Copy + Into<f32>>(
    src: &[S],
    h: usize,
    w: usize,
    degrees: f32,
    mut emit: impl FnMut(usize, [f32; C]),
) {
    let (pw, ph) = (w + 2, h + 2);
    with_scratch(&PADDED, pw * ph * C, |padded| {
        rotate_padded::<C, S>(src, h, w, degrees, padded, &mut emit)
    })
}

fn rotate_padded<const C: usize, S: Copy + Into<f32>>(
    src: &[S],
    h: usize,
    w: usize,
    degrees: f32,
    padded: &mut [f32],
    emit: &mut impl FnMut(usize, [f32; C]),
) {
    let (pw, ph) = (w + 2, h + 2);
    debug_assert_eq!(padded.len(), pw * ph * C);
    for (y, row) in src.chunks_exact(w * C).enumerate() {
        let dst = &mut padded[((y + 1) * pw + 1) * C..((y + 1) * pw + 1 + w) * C];
        for (d, &s) in dst.iter_mut().zip(row) {
            *d = s.into();
        }
    }
    let a = f64::from(degrees).to_radians();
    let (sin, cos) = (a.sin(), a.cos());
    let cx = (w as f64 - 1.0) * 0.5;
    let cy = (h as f64 - 1.0) * 0.5;
    // Padded coordinates: source (x_s, y_s) is at (x_s + 1, y_s + 1).
    let (max_x, max_y) = (w as f32 + 1.0, h as f32 + 1.0);
    let (cosf, sinf) = (cos as f32, sin as f32);
    for y in 0..h {
        let dy = y as f64 - cy;
        let x_row = (cx + 1.0 - cos * cx + sin * dy) as f32;
        let y_row = (cy + 1.0 + sin * cx + cos * dy) as f32;
        let (lo_x, hi_x) = inside_range(x_row, cosf, max_x, w);
        let (lo_y, hi_y) = inside_range(y_row, -sinf, max_y, w);
        let (lo, hi) = (lo_x.max(lo_y), hi_x.min(hi_y));
        for x in lo..hi.max(lo) {
            let xs = x_row + cosf * x as f32;
            let ys = y_row + -sinf * x as f32;
            // Both are in (0, W + 1) x (0, H + 1) here, so the casts floor;
            // `min` only guards against rounding at the far edge.
            let x0 = (xs as usize).min(w);
            let y0 = (ys as usize).min(h);
            let (fx, fy) = (xs - x0 as f32, ys - y0 as f32);
            let i00 = (y0 * pw + x0) * C;
            let i10 = i00 + pw * C;
            let top = &padded[i00..i00 + 2 * C];
            let bot = &padded[i10..i10 + 2 * C];
            let mut acc = [0.0f32; C];
            for c in 0..C {
                let t = top[c] + fx * (top[C + c] - top[c]);
                let b = bot[c] + fx * (bot[C + c] - bot[c]);
                acc[c] = t + fy * (b - t);
            }
            emit(y * w + x, acc);
        }
    }
}

/// `[rotate(src) > thr]` as 0/1 values into `out` (length `h * w`), equal to
/// thresholding [`rotate_bilinear`]'s output, but faster: a pixel whose four
/// taps are all above (or all at most) `thr` is decided without
/// interpolating, since bilinear weights are convex. Pixels sampling outside
/// the source get `[0 > thr]`, as the rotated image is 0 there.
pub(crate) fn rotate_threshold(
    src: &[f32],
    h: usize,
    w: usize,
    degrees: f32,
    thr: f32,
    out: &mut [f32],
) {
    let outside = if 0.0 > thr { 1.0 } else { 0.0 };
    out.fill(outside);
    let (pw, ph) = (w + 2, h + 2);
    with_scratch(&PADDED, pw * ph, |padded| {
        with_scratch(&CLASS, pw * ph, |class| {
            with_scratch(&ABOVE, pw * ph, |above| {
                with_scratch(&SAT, (ph + 1) * (pw + 1), |sat| {
                    let scratch = Scratch {
                        padded,
                        class,
                        above,
                        sat,
                    };
                    threshold_padded(src, h, w, degrees, thr, scratch, out)
                })
            })
        })
    })
}

/// Zeroed work buffers of [`rotate_threshold`].
struct Scratch<'a> {
    padded: &'a mut [f32],
    class: &'a mut [u8],
    above: &'a mut [u8],
    sat: &'a mut [u32],
}

fn threshold_padded(
    src: &[f32],
    h: usize,
    w: usize,
    degrees: f32,
    thr: f32,
    scratch: Scratch<'_>,
    out: &mut [f32],
) {
    let Scratch {
        padded,
        class,
        above,
        sat,
    } = scratch;
    let (pw, ph) = (w + 2, h + 2);
    for (y, row) in src.chunks_exact(w).enumerate() {
        padded[(y + 1) * pw + 1..(y + 1) * pw + 1 + w].copy_from_slice(row);
    }
    // Number of taps above `thr` in the 2x2 block whose top-left tap is i:
    // 0 = all at most thr (pixel is 0), 4 = all above (pixel is 1), else
    // interpolate.
    for (a, &v) in above.iter_mut().zip(padded.iter()) {
        *a = u8::from(v > thr);
    }
    let len = (ph - 1) * pw - 1;
    let (a00, a01) = (&above[..len], &above[1..len + 1]);
    let (a10, a11) = (&above[pw..pw + len], &above[pw + 1..pw + 1 + len]);
    for ((((c, &p), &q), &r), &t) in class[..len].iter_mut().zip(a00).zip(a01).zip(a10).zip(a11) {
        *c = p + q + r + t;
    }
    // Summed-area table of "block not all below", to skip 8x8 output tiles
    // whose whole source footprint is below the threshold (most of them:
    // DRAEM masks cover a few percent). Only valid when such pixels equal
    // the fill value, i.e. thr >= 0.
    let sat_w = pw + 1;
    for by in 0..ph - 1 {
        let mut run = 0u32;
        for bx in 0..pw - 1 {
            run += u32::from(class[by * pw + bx] != 0);
            sat[(by + 1) * sat_w + bx + 1] = sat[by * sat_w + bx + 1] + run;
        }
    }
    let a = f64::from(degrees).to_radians();
    let (sin, cos) = (a.sin(), a.cos());
    let cx = (w as f64 - 1.0) * 0.5;
    let cy = (h as f64 - 1.0) * 0.5;
    let (max_x, max_y) = (w as f32 + 1.0, h as f32 + 1.0);
    let (cosf, sinf) = (cos as f32, sin as f32);
    // Per output row: the source position of x = 0 and the range of x that
    // samples inside the (padded) source.
    let rows: Vec<(f32, f32, usize, usize)> = (0..h)
        .map(|y| {
            let dy = y as f64 - cy;
            let x_row = (cx + 1.0 - cos * cx + sin * dy) as f32;
            let y_row = (cy + 1.0 + sin * cx + cos * dy) as f32;
            let (lo_x, hi_x) = inside_range(x_row, cosf, max_x, w);
            let (lo_y, hi_y) = inside_range(y_row, -sinf, max_y, w);
            let (lo, hi) = (lo_x.max(lo_y), hi_x.min(hi_y));
            (x_row, y_row, lo, hi.max(lo))
        })
        .collect();
    let may_skip = thr >= 0.0;
    const TILE: usize = 8;
    for ty in (0..h).step_by(TILE) {
        let y_end = (ty + TILE).min(h);
        for tx in (0..w).step_by(TILE) {
            let x_end = (tx + TILE).min(w);
            if may_skip {
                // Source footprint of the tile: its corners, widened by one
                // block against rounding.
                let mut bx = (f32::INFINITY, f32::NEG_INFINITY);
                let mut byr = (f32::INFINITY, f32::NEG_INFINITY);
                for &(yy, xx) in &[
                    (ty, tx),
                    (ty, x_end - 1),
                    (y_end - 1, tx),
                    (y_end - 1, x_end - 1),
                ] {
                    let (x_row, y_row, _, _) = rows[yy];
                    let xs = x_row + cosf * xx as f32;
                    let ys = y_row + -sinf * xx as f32;
                    bx = (bx.0.min(xs), bx.1.max(xs));
                    byr = (byr.0.min(ys), byr.1.max(ys));
                }
                let clamp = |v: f32, n: usize| (v.floor().max(0.0) as usize).min(n);
                let (x0, x1) = (clamp(bx.0 - 1.0, w), clamp(bx.1 + 1.0, w));
                let (y0, y1) = (clamp(byr.0 - 1.0, h), clamp(byr.1 + 1.0, h));
                let count = sat[(y1 + 1) * sat_w + x1 + 1] + sat[y0 * sat_w + x0]
                    - sat[y0 * sat_w + x1 + 1]
                    - sat[(y1 + 1) * sat_w + x0];
                if count == 0 {
                    continue; // every pixel of the tile is 0, already filled
                }
            }
            for (y, &(x_row, y_row, lo, hi)) in rows.iter().enumerate().take(y_end).skip(ty) {
                let out_row = &mut out[y * w..(y + 1) * w];
                let first = lo.max(tx);
                let end = hi.min(x_end).max(first);
                for (x, o) in out_row.iter_mut().enumerate().take(end).skip(first) {
                    let xs = x_row + cosf * x as f32;
                    let ys = y_row + -sinf * x as f32;
                    // Inside (0, W + 1) x (0, H + 1): the casts floor; `min`
                    // only guards against rounding at the far edge.
                    let x0 = (xs as usize).min(w);
                    let y0 = (ys as usize).min(h);
                    let i00 = y0 * pw + x0;
                    *o = match class[i00] {
                        0 => 0.0,
                        4 => 1.0,
                        _ => {
                            let (fx, fy) = (xs - x0 as f32, ys - y0 as f32);
                            let t = padded[i00] + fx * (padded[i00 + 1] - padded[i00]);
                            let b =
                                padded[i00 + pw] + fx * (padded[i00 + pw + 1] - padded[i00 + pw]);
                            if t + fy * (b - t) > thr {
                                1.0
                            } else {
                                0.0
                            }
                        }
                    };
                }
            }
        }
    }
}

/// The integers `x` in `[0, n)` with `0 < a + b x < max` (evaluated in `f32`
/// exactly as the rotation loop does), a contiguous range `lo..hi`.
fn inside_range(a: f32, b: f32, max: f32, n: usize) -> (usize, usize) {
    let inside = |x: usize| {
        let v = a + b * x as f32;
        v > 0.0 && v < max
    };
    if b == 0.0 {
        return if inside(0) { (0, n) } else { (0, 0) };
    }
    let (t0, t1) = (-a / b, (max - a) / b);
    let clampn = |t: f32| t.max(0.0).min(n as f32) as usize;
    let mut lo = clampn(t0.min(t1).floor());
    let mut hi = clampn(t0.max(t1).ceil() + 1.0);
    while lo < hi && !inside(lo) {
        lo += 1;
    }
    while hi > lo && !inside(hi - 1) {
        hi -= 1;
    }
    (lo, hi)
}

/// Bilinear resize of a `C`-channel HWC buffer with half-pixel centres
/// (OpenCV's `INTER_LINEAR` sampling positions, as DRAEM's `cv2.resize`).
pub(crate) fn resize_bilinear<const C: usize>(
    src: &[f32],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let axis = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let s = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let xs = axis(w, ow);
    let ys = axis(h, oh);
    let mut out = vec![0.0; oh * ow * C];
    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
            for c in 0..C {
                let v00 = src[(y0 * w + x0) * C + c];
                let v01 = src[(y0 * w + x1) * C + c];
                let v10 = src[(y1 * w + x0) * C + c];
                let v11 = src[(y1 * w + x1) * C + c];
                let top = v00 + fx * (v01 - v00);
                let bot = v10 + fx * (v11 - v10);
                out[(oy * ow + ox) * C + c] = top + fy * (bot - top);
            }
        }
    }
    out
}

/// Resizes an 8-bit image to `height x width` with OpenCV-style bilinear
/// sampling (DRAEM: `cv2.resize(img, (W, H))`, `INTER_LINEAR`). Returns the
/// input unchanged when it already has that size.
pub fn resize_rgb8(
    img: &::image::RgbImage,
    height: usize,
    width: usize,
) -> Result<::image::RgbImage> {
    check_size(height, width)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    check_size(h, w)?;
    if (h, w) == (height, width) {
        return Ok(img.clone());
    }
    let src: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v)).collect();
    let out = resize_bilinear::<3>(&src, h, w, height, width);
    let raw = out
        .iter()
        .map(|&v| (v.clamp(0.0, 255.0) + 0.5) as u8)
        .collect();
    ::image::RgbImage::from_raw(width as u32, height as u32, raw).ok_or(Error::BufferLength {
        shape: vec![height, width, 3],
        expected: height * width * 3,
        found: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward bilinear rotation with per-tap bounds checks, in f64.
    fn naive(src: &[f32], h: usize, w: usize, degrees: f64) -> Vec<f32> {
        let (s, c) = degrees.to_radians().sin_cos();
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let at = |x: i64, y: i64| {
            if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
                0.0
            } else {
                f64::from(src[y as usize * w + x as usize])
            }
        };
        let mut out = vec![0.0; h * w];
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let xs = cx + c * dx + s * dy;
                let ys = cy - s * dx + c * dy;
                let (x0, y0) = (xs.floor(), ys.floor());
                let (fx, fy) = (xs - x0, ys - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let v = at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + at(x0 + 1, y0) * fx * (1.0 - fy)
                    + at(x0, y0 + 1) * (1.0 - fx) * fy
                    + at(x0 + 1, y0 + 1) * fx * fy;
                out[y * w + x] = v as f32;
            }
        }
        out
    }

    #[test]
    fn fused_threshold_matches_rotate_then_threshold() {
        for &(h, w) in &[(23usize, 29usize), (70, 90)] {
            // A smooth field with sparse bumps above 0.5, like a Perlin mask.
            let src: Vec<f32> = (0..h * w)
                .map(|i| {
                    let (y, x) = ((i / w) as f32, (i % w) as f32);
                    0.9 * (x * 0.21).sin() * (y * 0.17).cos() + 0.05 * (i as f32 * 0.37).sin()
                })
                .collect();
            for &deg in &[0.0f32, 12.0, -45.0, 77.0, 90.0, -3.0] {
                for &thr in &[0.5f32, 0.0, -0.3] {
                    let mut rotated = vec![0.0; h * w];
                    rotate_bilinear::<1>(&src, h, w, deg, &mut rotated);
                    let mut fused = vec![0.0; h * w];
                    rotate_threshold(&src, h, w, deg, thr, &mut fused);
                    for (i, (r, f)) in rotated.iter().zip(&fused).enumerate() {
                        // Pixels outside the source: the rotated image is 0 there.
                        let expected = if *r > thr { 1.0 } else { 0.0 };
                        assert_eq!(*f, expected, "pixel {i} at {deg} deg, thr {thr}: value {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn fast_rotation_matches_naive_bilinear() {
        for &(h, w) in &[(1, 1), (2, 7), (13, 5), (16, 16), (31, 24)] {
            let src: Vec<f32> = (0..h * w)
                .map(|i| ((i * 37 % 17) as f32) / 17.0 + 0.1)
                .collect();
            for &deg in &[0.0, 1.0, -17.5, 30.0, 45.0, 89.9, 90.0, -90.0, 133.0, 180.0] {
                let mut out = vec![0.0; h * w];
                rotate_bilinear::<1>(&src, h, w, deg as f32, &mut out);
                let reference = naive(&src, h, w, deg);
                for (i, (a, b)) in out.iter().zip(&reference).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-4,
                        "{h}x{w} at {deg} deg, pixel {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
