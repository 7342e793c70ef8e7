//! Colour-space conversions (unit-range `f32` RGB) used by the brightness and
//! hue/saturation augmenters. Formulas follow OpenCV's `cvtColor` (which
//! imgaug calls), without OpenCV's intermediate 8-bit quantisation.

/// RGB -> (hue in degrees `[0, 360)`, saturation, value), OpenCV `RGB2HSV`.
#[inline]
pub(crate) fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let v = r.max(g).max(b);
    let min = r.min(g).min(b);
    let c = v - min;
    let s = if v > 0.0 { c / v } else { 0.0 };
    (hue(r, g, b, v, c), s, v)
}

/// Inverse of [`rgb_to_hsv`].
#[inline]
pub(crate) fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let c = v * s;
    from_hue_chroma(h, c, v - c)
}

/// RGB -> (hue in degrees, lightness, saturation), OpenCV `RGB2HLS`. The
/// brightness augmenter uses a shortcut; this full form checks it in tests.
#[cfg(test)]
pub(crate) fn rgb_to_hls(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let c = max - min;
    let l = 0.5 * (max + min);
    let s = if c <= 0.0 {
        0.0
    } else if l < 0.5 {
        c / (max + min)
    } else {
        c / (2.0 - max - min)
    };
    (hue(r, g, b, max, c), l, s)
}

/// Inverse of [`rgb_to_hls`].
#[cfg(test)]
pub(crate) fn hls_to_rgb(h: f32, l: f32, s: f32) -> (f32, f32, f32) {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    from_hue_chroma(h, c, l - 0.5 * c)
}

#[inline]
fn hue(r: f32, g: f32, b: f32, max: f32, c: f32) -> f32 {
    if c <= 0.0 {
        return 0.0;
    }
    let h = if max == r {
        60.0 * (g - b) / c
    } else if max == g {
        120.0 + 60.0 * (b - r) / c
    } else {
        240.0 + 60.0 * (r - g) / c
    };
    if h < 0.0 {
        h + 360.0
    } else {
        h
    }
}

/// RGB from hue (degrees), chroma `c` and the minimum component `m`.
#[inline]
fn from_hue_chroma(h: f32, c: f32, m: f32) -> (f32, f32, f32) {
    // Wrap into [0, 360) without fmod (hue offsets are within one turn).
    let mut h = h;
    while h < 0.0 {
        h += 360.0;
    }
    while h >= 360.0 {
        h -= 360.0;
    }
    let hp = h / 60.0;
    let sector = (hp as u32).min(5);
    let f = hp - sector as f32;
    // c * (1 - |hp mod 2 - 1|): rising edge in even sectors, falling in odd.
    let x = c * if sector.is_multiple_of(2) { f } else { 1.0 - f };
    let (r, g, b) = match sector {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    (r + m, g + m, b + m)
}

/// RGB -> (Y, Cr, Cb), OpenCV `RGB2YCrCb` (offset 0.5 in unit range).
#[inline]
pub(crate) fn rgb_to_ycrcb(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    (y, (r - y) * 0.713 + 0.5, (b - y) * 0.564 + 0.5)
}

/// Inverse of [`rgb_to_ycrcb`], OpenCV `YCrCb2RGB`.
#[inline]
pub(crate) fn ycrcb_to_rgb(y: f32, cr: f32, cb: f32) -> (f32, f32, f32) {
    let (cr, cb) = (cr - 0.5, cb - 0.5);
    (y + 1.403 * cr, y - 0.714 * cr - 0.344 * cb, y + 1.773 * cb)
}

/// sRGB (8-bit code) -> linear light, OpenCV's gamma for `RGB2Lab`.
pub(crate) fn srgb_to_linear_table() -> [f32; 256] {
    let mut t = [0.0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        let c = i as f32 / 255.0;
        *v = if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        };
    }
    t
}

/// Linear light in `[0, 1]` -> sRGB in `[0, 1]`.
#[inline]
pub(crate) fn linear_to_srgb(c: f32) -> f32 {
    let c = c.clamp(0.0, 1.0);
    if c <= 0.003_130_8 {
        12.92 * c
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

/// `round(255 * linear_to_srgb(c))` through a 4097-entry table with linear
/// interpolation (error below 0.01 of an 8-bit level), avoiding `powf`.
pub(crate) struct SrgbEncoder {
    table: Vec<f32>,
}

impl SrgbEncoder {
    const N: usize = 4096;

    pub(crate) fn new() -> Self {
        let table = (0..=Self::N)
            .map(|i| 255.0 * linear_to_srgb(i as f32 / Self::N as f32))
            .collect();
        Self { table }
    }

    #[inline]
    pub(crate) fn to_u8(&self, c: f32) -> u8 {
        let x = c.clamp(0.0, 1.0) * Self::N as f32;
        let i = (x as usize).min(Self::N - 1);
        let f = x - i as f32;
        let v = self.table[i] + f * (self.table[i + 1] - self.table[i]);
        (v.clamp(0.0, 255.0) + 0.5) as u8
    }
}

const XN: f32 = 0.950_456;
const ZN: f32 = 1.088_754;

#[inline]
fn lab_f(t: f32) -> f32 {
    if t > 0.008_856 {
        t.cbrt()
    } else {
        7.787 * t + 16.0 / 116.0
    }
}

#[inline]
fn lab_f_inv(t: f32) -> f32 {
    if t > 6.0 / 29.0 {
        t * t * t
    } else {
        (t - 16.0 / 116.0) / 7.787
    }
}

/// Linear RGB -> CIE L*a*b* (D65; L in `[0, 100]`), OpenCV `RGB2Lab`.
#[inline]
pub(crate) fn linear_rgb_to_lab(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let x = (0.412_453 * r + 0.357_580 * g + 0.180_423 * b) / XN;
    let y = 0.212_671 * r + 0.715_160 * g + 0.072_169 * b;
    let z = (0.019_334 * r + 0.119_193 * g + 0.950_227 * b) / ZN;
    let (fx, fy, fz) = (lab_f(x), lab_f(y), lab_f(z));
    let l = if y > 0.008_856 {
        116.0 * fy - 16.0
    } else {
        903.3 * y
    };
    (l, 500.0 * (fx - fy), 200.0 * (fy - fz))
}

/// Inverse of [`linear_rgb_to_lab`] (returns linear RGB, unclamped).
#[inline]
pub(crate) fn lab_to_linear_rgb(l: f32, a: f32, b: f32) -> (f32, f32, f32) {
    let fy = (l + 16.0) / 116.0;
    let y = if l > 8.0 { fy * fy * fy } else { l / 903.3 };
    let x = lab_f_inv(fy + a / 500.0) * XN;
    let z = lab_f_inv(fy - b / 200.0) * ZN;
    (
        3.240_479 * x - 1.537_15 * y - 0.498_535 * z,
        -0.969_256 * x + 1.875_991 * y + 0.041_556 * z,
        0.055_648 * x - 0.204_043 * y + 1.057_311 * z,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let lin = srgb_to_linear_table();
        for &(r, g, b) in &[
            (0.2f32, 0.7, 0.4),
            (1.0, 0.0, 0.5),
            (0.3, 0.3, 0.3),
            (0.9, 0.8, 0.1),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() + (g - g2).abs() + (b - b2).abs() < 1e-5);
            let (h, l, s) = rgb_to_hls(r, g, b);
            let (r2, g2, b2) = hls_to_rgb(h, l, s);
            assert!((r - r2).abs() + (g - g2).abs() + (b - b2).abs() < 1e-5);
            let (y, cr, cb) = rgb_to_ycrcb(r, g, b);
            let (r2, g2, b2) = ycrcb_to_rgb(y, cr, cb);
            assert!((r - r2).abs() + (g - g2).abs() + (b - b2).abs() < 2e-3);
            let q = |v: f32| lin[(v * 255.0).round() as usize];
            let (l, a, bb) = linear_rgb_to_lab(q(r), q(g), q(b));
            let (r2, g2, b2) = lab_to_linear_rgb(l, a, bb);
            let e = (linear_to_srgb(r2) - r).abs()
                + (linear_to_srgb(g2) - g).abs()
                + (linear_to_srgb(b2) - b).abs();
            assert!(e < 1e-2, "lab round trip error {e}");
        }
        // Known values: pure red is hue 0, green 120, blue 240; white has L = 100.
        assert_eq!(rgb_to_hsv(1.0, 0.0, 0.0).0, 0.0);
        assert_eq!(rgb_to_hsv(0.0, 1.0, 0.0).0, 120.0);
        assert_eq!(rgb_to_hsv(0.0, 0.0, 1.0).0, 240.0);
        let enc = SrgbEncoder::new();
        for i in 0..=1000 {
            let c = i as f32 / 1000.0;
            let exact = (255.0 * linear_to_srgb(c)).round();
            assert!((f32::from(enc.to_u8(c)) - exact).abs() <= 1.0);
        }
        let (l, _, _) = linear_rgb_to_lab(1.0, 1.0, 1.0);
        assert!((l - 100.0).abs() < 1e-2);
    }
}
