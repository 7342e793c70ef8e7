//! DRAEM's ten texture augmenters on 8-bit RGB images, and the random choice
//! of three of them without replacement (`np.random.choice(10, 3, replace=False)`,
//! applied in the drawn order).
//!
//! DRAEM builds them with imgaug 0.4:
//!
//! | [`AugmenterKind`] | imgaug call in DRAEM | what is implemented here |
//! |---|---|---|
//! | `GammaContrast` | `GammaContrast((0.5, 2.0), per_channel=True)` | per channel `g ~ U(0.5, 2)`, `v' = floor(255 (v/255)^g)` (imgaug's uint8 LUT truncates) |
//! | `MultiplyAndAddToBrightness` | `MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30))` | colour space drawn from {YCrCb, HSV, HLS, Lab} (imgaug's default list); brightness channel (Y, V, L, L) on the 0..255 scale multiplied by `U(0.8, 1.2)` and shifted by `U(-30, 30)`, in random order (`random_order=True`), rounded and clipped after each step |
//! | `Sharpness` | `pillike.EnhanceSharpness()` (factor `U(0, 2)`) | PIL `ImageEnhance.Sharpness`: blend of the image with its `SMOOTH` filter (`[[1,1,1],[1,5,1],[1,1,1]] / 13`, border pixels kept): `v' = s + f (v - s)`, clipped, truncated |
//! | `AddToHueAndSaturation` | `AddToHueAndSaturation((-50, 50), per_channel=True)` | hue and saturation offsets `U{-50..50}` drawn independently; OpenCV hue (0..180) shifted by `round(o * 180 / 255)` modulo 180, saturation (0..255) by `o`, clipped |
//! | `Solarize` | `Solarize(0.5, threshold=(32, 128))` | with probability 0.5: pixels `>= t`, `t ~ U(32, 128)`, become `255 - v` |
//! | `Posterize` | `Posterize()` (`nb_bits=(1, 8)`) | `b ~ U{1..8}`, keep the `b` high bits (PIL `posterize`) |
//! | `Invert` | `Invert()` | `v' = 255 - v` |
//! | `Autocontrast` | `pillike.Autocontrast()` (`cutoff=(0, 20)`) | PIL `ImageOps.autocontrast` per channel with `cutoff ~ U{0..20}` percent |
//! | `Equalize` | `pillike.Equalize()` | PIL `ImageOps.equalize` per channel |
//! | `AffineRotate` | `Affine(rotate=(-45, 45))` | bilinear rotation by `U(-45, 45)` degrees about the centre, black outside |
//!
//! Differences from imgaug, all small: colour conversions are done in `f32`
//! without OpenCV's intermediate 8-bit rounding of the untouched channels;
//! OpenCV's 1/32-pixel fixed-point bilinear weights are not reproduced.
//! DRAEM feeds BGR images (OpenCV) to augmenters that assume RGB; here images
//! are RGB, so the hue and brightness weights act on the right channels.

use image::RgbImage;
use rand::{seq::index, Rng, RngCore};

use crate::color;
use crate::geometry::rotate_with;

/// One of DRAEM's ten augmenters (see the module table for exact semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AugmenterKind {
    /// `GammaContrast((0.5, 2.0), per_channel=True)`.
    GammaContrast,
    /// `MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30))`.
    MultiplyAndAddToBrightness,
    /// `pillike.EnhanceSharpness()`, factor `U(0, 2)`.
    Sharpness,
    /// `AddToHueAndSaturation((-50, 50), per_channel=True)`.
    AddToHueAndSaturation,
    /// `Solarize(0.5, threshold=(32, 128))`.
    Solarize,
    /// `Posterize()`, 1..8 bits.
    Posterize,
    /// `Invert()`.
    Invert,
    /// `pillike.Autocontrast()`, cutoff 0..20 %.
    Autocontrast,
    /// `pillike.Equalize()`.
    Equalize,
    /// `Affine(rotate=(-45, 45))`.
    AffineRotate,
}

impl AugmenterKind {
    /// All ten, in DRAEM's list order.
    pub const ALL: [AugmenterKind; 10] = [
        Self::GammaContrast,
        Self::MultiplyAndAddToBrightness,
        Self::Sharpness,
        Self::AddToHueAndSaturation,
        Self::Solarize,
        Self::Posterize,
        Self::Invert,
        Self::Autocontrast,
        Self::Equalize,
        Self::AffineRotate,
    ];

    /// Applies this augmenter in place, drawing its parameters from `rng`.
    pub fn apply<R: RngCore + ?Sized>(self, img: &mut RgbImage, rng: &mut R) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return;
        }
        let px: &mut [u8] = img;
        match self {
            Self::GammaContrast => gamma_contrast(px, rng),
            Self::MultiplyAndAddToBrightness => multiply_and_add_to_brightness(px, rng),
            Self::Sharpness => sharpness(px, h, w, rng.random_range(0.0..2.0)),
            Self::AddToHueAndSaturation => {
                let hue = rng.random_range(-50..=50);
                let sat = rng.random_range(-50..=50);
                add_to_hue_and_saturation(px, hue, sat);
            }
            Self::Solarize => {
                if rng.random_bool(0.5) {
                    let t: f32 = rng.random_range(32.0..128.0);
                    solarize(px, t);
                }
            }
            Self::Posterize => posterize(px, rng.random_range(1..=8)),
            Self::Invert => px.iter_mut().for_each(|v| *v = 255 - *v),
            Self::Autocontrast => autocontrast(px, rng.random_range(0..=20)),
            Self::Equalize => equalize(px),
            Self::AffineRotate => rotate_u8(px, h, w, rng.random_range(-45.0..45.0)),
        }
    }
}

/// DRAEM's `randAugmenter()`: `count` distinct augmenters from `pool` chosen
/// uniformly without replacement, applied in the drawn order. Returns them.
pub fn random_augment<R: RngCore + ?Sized>(
    img: &mut RgbImage,
    pool: &[AugmenterKind],
    count: usize,
    rng: &mut R,
) -> Vec<AugmenterKind> {
    let count = count.min(pool.len());
    let chosen: Vec<AugmenterKind> = index::sample(rng, pool.len(), count)
        .into_iter()
        .map(|i| pool[i])
        .collect();
    for kind in &chosen {
        kind.apply(img, rng);
    }
    chosen
}

/// Applies a 256-entry lookup table per channel.
fn apply_luts(px: &mut [u8], luts: &[[u8; 256]; 3]) {
    for p in px.chunks_exact_mut(3) {
        for c in 0..3 {
            p[c] = luts[c][p[c] as usize];
        }
    }
}

fn gamma_contrast<R: RngCore + ?Sized>(px: &mut [u8], rng: &mut R) {
    let mut luts = [[0u8; 256]; 3];
    for lut in &mut luts {
        let g: f32 = rng.random_range(0.5..2.0);
        for (i, v) in lut.iter_mut().enumerate() {
            *v = (255.0 * (i as f32 / 255.0).powf(g)).clamp(0.0, 255.0) as u8;
        }
    }
    apply_luts(px, &luts);
}

/// Rounds and clips a 0..255-scale value.
#[inline]
fn q8(v: f32) -> f32 {
    // Round half up after clamping: equal to `round` on [0, 255] and
    // inlined (`f32::round` is a libm call on baseline x86_64).
    (v.clamp(0.0, 255.0) + 0.5) as u8 as f32
}

fn multiply_and_add_to_brightness<R: RngCore + ?Sized>(px: &mut [u8], rng: &mut R) {
    let space = rng.random_range(0..4u32);
    let mul: f32 = rng.random_range(0.8..1.2);
    let add: f32 = rng.random_range(-30.0..30.0);
    let mul_first = rng.random_bool(0.5);
    let change = |b: f32| -> f32 {
        if mul_first {
            q8(q8(b * mul) + add)
        } else {
            q8(q8(b + add) * mul)
        }
    };
    // Lookup table for the brightness change on the 0..255 scale.
    let mut table = [0.0f32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        *t = change(i as f32);
    }
    match space {
        // YCrCb: Cr and Cb fixed, so every channel moves by Y' - Y
        // (OpenCV's inverse coefficients 1.403 * 0.713 ~ 1.773 * 0.564 ~ 1).
        0 => {
            for p in px.chunks_exact_mut(3) {
                let [r, g, b] = [p[0], p[1], p[2]].map(f32::from);
                let (y, cr, cb) = color::rgb_to_ycrcb(r / 255.0, g / 255.0, b / 255.0);
                let y2 = table[q8(y * 255.0) as usize] / 255.0;
                let (r, g, b) = color::ycrcb_to_rgb(y2, cr, cb);
                p[0] = q8(r * 255.0) as u8;
                p[1] = q8(g * 255.0) as u8;
                p[2] = q8(b * 255.0) as u8;
            }
        }
        // HSV with H and S fixed: RGB scales with V.
        1 => {
            for p in px.chunks_exact_mut(3) {
                let v = p[0].max(p[1]).max(p[2]);
                let v2 = table[v as usize];
                if v == 0 {
                    p.fill(v2 as u8);
                } else {
                    let k = v2 / f32::from(v);
                    for c in p.iter_mut() {
                        *c = q8(f32::from(*c) * k) as u8;
                    }
                }
            }
        }
        // HLS with H and S fixed: RGB = m + C * shape(H), where the chroma
        // C = (1 - |2L - 1|) S scales with (1 - |2L - 1|) and m = L - C / 2.
        2 => {
            for p in px.chunks_exact_mut(3) {
                let [r, g, b] = [p[0], p[1], p[2]].map(|v| f32::from(v) / 255.0);
                let (max, min) = (r.max(g).max(b), r.min(g).min(b));
                let (c, l) = (max - min, 0.5 * (max + min));
                let l2 = table[q8(l * 255.0) as usize] / 255.0;
                let denom = 1.0 - (2.0 * l - 1.0).abs();
                if c <= 0.0 || denom <= 0.0 {
                    p.fill(q8(l2 * 255.0) as u8);
                    continue;
                }
                let c2 = c * (1.0 - (2.0 * l2 - 1.0).abs()) / denom;
                let m2 = l2 - 0.5 * c2;
                let k = c2 / c;
                for (dst, v) in p.iter_mut().zip([r, g, b]) {
                    *dst = q8((m2 + k * (v - min)) * 255.0) as u8;
                }
            }
        }
        // CIE Lab with a and b fixed (L scaled to 0..255 as OpenCV's 8-bit Lab).
        _ => {
            let lin = color::srgb_to_linear_table();
            let encode = color::SrgbEncoder::new();
            for p in px.chunks_exact_mut(3) {
                let (l, a, bb) = color::linear_rgb_to_lab(
                    lin[p[0] as usize],
                    lin[p[1] as usize],
                    lin[p[2] as usize],
                );
                let l8 = table[q8(l * 2.55) as usize];
                let (r, g, b) = color::lab_to_linear_rgb(l8 / 2.55, a, bb);
                p[0] = encode.to_u8(r);
                p[1] = encode.to_u8(g);
                p[2] = encode.to_u8(b);
            }
        }
    }
}

/// PIL `ImageEnhance.Sharpness(img).enhance(factor)`.
fn sharpness(px: &mut [u8], h: usize, w: usize, factor: f32) {
    if h < 3 || w < 3 {
        return; // PIL's 3x3 filter keeps border pixels: nothing changes.
    }
    let src = px.to_vec();
    let stride = w * 3;
    // Horizontal 3-tap sums per row, then the vertical sum: box sum of the
    // 3x3 neighbourhood; the SMOOTH kernel adds 4 more times the centre.
    let mut hsum = vec![0u16; h * stride];
    for (row, out) in src.chunks_exact(stride).zip(hsum.chunks_exact_mut(stride)) {
        for i in 3..stride - 3 {
            out[i] = u16::from(row[i - 3]) + u16::from(row[i]) + u16::from(row[i + 3]);
        }
    }
    for y in 1..h - 1 {
        let (above, here, below) = (
            &hsum[(y - 1) * stride..y * stride],
            &hsum[y * stride..(y + 1) * stride],
            &hsum[(y + 1) * stride..(y + 2) * stride],
        );
        let center = &src[y * stride..(y + 1) * stride];
        let out = &mut px[y * stride..(y + 1) * stride];
        for i in 3..stride - 3 {
            let sum = u32::from(above[i])
                + u32::from(here[i])
                + u32::from(below[i])
                + 4 * u32::from(center[i]);
            // round(sum / 13) in integers (sum / 13 is never exactly k + 0.5).
            let smooth = ((2 * sum + 13) / 26) as f32;
            let v = f32::from(center[i]);
            // PIL's blend truncates after clamping.
            out[i] = (smooth + factor * (v - smooth)).clamp(0.0, 255.0) as u8;
        }
    }
}

fn add_to_hue_and_saturation(px: &mut [u8], hue: i32, sat: i32) {
    // imgaug maps the offset from the 0..255 scale onto OpenCV's 0..180 hue
    // scale; one OpenCV hue unit is 2 degrees.
    let hue_deg = 2.0 * (hue as f32 * 180.0 / 255.0).round();
    let sat = sat as f32 / 255.0;
    for p in px.chunks_exact_mut(3) {
        let (h, s, v) = color::rgb_to_hsv(
            f32::from(p[0]) / 255.0,
            f32::from(p[1]) / 255.0,
            f32::from(p[2]) / 255.0,
        );
        let (r, g, b) = color::hsv_to_rgb(h + hue_deg, (s + sat).clamp(0.0, 1.0), v);
        p[0] = q8(r * 255.0) as u8;
        p[1] = q8(g * 255.0) as u8;
        p[2] = q8(b * 255.0) as u8;
    }
}

fn solarize(px: &mut [u8], threshold: f32) {
    for v in px {
        if f32::from(*v) >= threshold {
            *v = 255 - *v;
        }
    }
}

fn posterize(px: &mut [u8], bits: u32) {
    let mask = !((1u16 << (8 - bits)) - 1) as u8;
    px.iter_mut().for_each(|v| *v &= mask);
}

fn histograms(px: &[u8]) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for p in px.chunks_exact(3) {
        for c in 0..3 {
            h[c][p[c] as usize] += 1;
        }
    }
    h
}

/// PIL `ImageOps.autocontrast(img, cutoff)` (per channel).
fn autocontrast(px: &mut [u8], cutoff: u32) {
    let hists = histograms(px);
    let mut luts = [[0u8; 256]; 3];
    for (hist, lut) in hists.iter().zip(luts.iter_mut()) {
        let mut h = *hist;
        let n: u64 = h.iter().sum();
        let cut0 = n * u64::from(cutoff) / 100;
        let mut cut = cut0;
        for v in h.iter_mut() {
            if cut == 0 {
                break;
            }
            let take = cut.min(*v);
            *v -= take;
            cut -= take;
        }
        cut = cut0;
        for v in h.iter_mut().rev() {
            if cut == 0 {
                break;
            }
            let take = cut.min(*v);
            *v -= take;
            cut -= take;
        }
        let lo = h.iter().position(|&v| v > 0);
        let hi = h.iter().rposition(|&v| v > 0);
        match (lo, hi) {
            (Some(lo), Some(hi)) if hi > lo => {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                for (i, v) in lut.iter_mut().enumerate() {
                    // PIL: int() truncates toward zero, then clamps.
                    *v = ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8;
                }
            }
            _ => lut.iter_mut().enumerate().for_each(|(i, v)| *v = i as u8),
        }
    }
    apply_luts(px, &luts);
}

/// PIL `ImageOps.equalize(img)` (per channel).
fn equalize(px: &mut [u8]) {
    let hists = histograms(px);
    let mut luts = [[0u8; 256]; 3];
    for (h, lut) in hists.iter().zip(luts.iter_mut()) {
        let nonzero: Vec<u64> = h.iter().copied().filter(|&v| v > 0).collect();
        let identity =
            |lut: &mut [u8; 256]| lut.iter_mut().enumerate().for_each(|(i, v)| *v = i as u8);
        if nonzero.len() <= 1 {
            identity(lut);
            continue;
        }
        let total: u64 = nonzero.iter().sum();
        let step = (total - nonzero[nonzero.len() - 1]) / 255;
        if step == 0 {
            identity(lut);
            continue;
        }
        let mut n = step / 2;
        for (i, v) in lut.iter_mut().enumerate() {
            *v = (n / step).min(255) as u8;
            n += h[i];
        }
    }
    apply_luts(px, &luts);
}

/// Bilinear rotation of an 8-bit HWC image (imgaug `Affine(rotate=a)`).
pub(crate) fn rotate_u8(px: &mut [u8], h: usize, w: usize, degrees: f32) {
    let src = px.to_vec();
    px.fill(0);
    rotate_with::<3, u8>(&src, h, w, degrees, |i, v| {
        for c in 0..3 {
            px[i * 3 + c] = q8(v[c]) as u8;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: u32, w: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, 200 - x as u8])
        })
    }

    #[test]
    fn invert_and_posterize_are_exact() {
        let mut img = ramp(8, 8);
        let orig = img.clone();
        AugmenterKind::Invert.apply(&mut img, &mut rand::rng());
        for (a, b) in img.as_raw().iter().zip(orig.as_raw()) {
            assert_eq!(*a, 255 - *b);
        }
        let mut px = vec![0b1011_0111u8, 255, 0];
        posterize(&mut px, 3);
        assert_eq!(px, vec![0b1010_0000, 0b1110_0000, 0]);
        posterize(&mut px, 8);
        assert_eq!(px, vec![0b1010_0000, 0b1110_0000, 0]);
    }

    #[test]
    fn solarize_inverts_above_threshold_only() {
        let mut px = vec![10u8, 64, 200];
        solarize(&mut px, 64.0);
        assert_eq!(px, vec![10, 191, 55]);
    }

    #[test]
    fn autocontrast_stretches_to_full_range() {
        // Values 50..=100 in every channel: PIL maps 50 -> 0 and, because
        // int(100 * 5.1 - 254.99999999999997) truncates, 100 -> 254.
        let mut px: Vec<u8> = (50..=100u8).flat_map(|v| [v, v, v]).collect();
        autocontrast(&mut px, 0);
        assert_eq!(px[0], 0);
        assert_eq!(px[px.len() - 1], 254);
        // 75 -> int(75 * 5.1 - 255) = 127.
        assert_eq!(px[25 * 3], 127);
    }

    #[test]
    fn equalize_matches_pil_on_a_small_histogram() {
        // Histogram: 0 x 100, 128 x 100, 255 x 56 (per channel).
        // step = (256 - 56) // 255 = 0 -> identity in PIL.
        let mut px: Vec<u8> = std::iter::repeat_n(0u8, 300)
            .chain(std::iter::repeat_n(128u8, 300))
            .chain(std::iter::repeat_n(255u8, 168))
            .collect();
        let orig = px.clone();
        equalize(&mut px);
        assert_eq!(px, orig);
        // 1000 x 10, 1000 x 20, 1000 x 30 -> step = 2000 // 255 = 7, n0 = 3:
        // lut[10] = 3 // 7 = 0, lut[20] = 1003 // 7 = 143, lut[30] = 2003 // 7 = 286 -> 255.
        let mut px: Vec<u8> = [10u8, 20, 30]
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, 3000))
            .collect();
        equalize(&mut px);
        assert_eq!((px[0], px[3000], px[6000]), (0, 143, 255));
    }

    #[test]
    fn sharpness_factor_one_is_identity_and_zero_smooths() {
        let mut img = ramp(6, 6);
        let orig = img.clone();
        sharpness(&mut img, 6, 6, 1.0);
        assert_eq!(img, orig);
        let mut flat = vec![100u8; 5 * 5 * 3];
        flat[(2 * 5 + 2) * 3] = 230; // one bright pixel in channel 0
        sharpness(&mut flat, 5, 5, 0.0);
        // Centre: (5*230 + 8*100) / 13 = 150; its neighbours (230 + 12*100) / 13 = 110.
        assert_eq!(flat[(2 * 5 + 2) * 3], 150);
        assert_eq!(flat[(2 * 5 + 1) * 3], 110);
    }

    #[test]
    fn random_augment_picks_distinct() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let mut img = ramp(16, 16);
            let chosen = random_augment(&mut img, &AugmenterKind::ALL, 3, &mut rng);
            assert_eq!(chosen.len(), 3);
            assert!(chosen[0] != chosen[1] && chosen[1] != chosen[2] && chosen[0] != chosen[2]);
        }
    }

    /// Pillow's own outputs (fixture from `scripts/make_fixtures.py`).
    #[test]
    fn matches_pillow_exactly() {
        let path = format!(
            "{}/tests/fixtures/pil_augment.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("fixture");
        let fx: serde_json::Value = serde_json::from_str(&text).expect("json");
        let bytes = |v: &serde_json::Value| -> Vec<u8> {
            v.as_array()
                .expect("array")
                .iter()
                .map(|x| x.as_u64().expect("int") as u8)
                .collect()
        };
        let (h, w) = (
            fx["height"].as_u64().unwrap() as usize,
            fx["width"].as_u64().unwrap() as usize,
        );
        let img = bytes(&fx["image"]);
        for (key, expected) in fx["autocontrast"].as_object().unwrap() {
            let mut px = img.clone();
            autocontrast(&mut px, key.parse().unwrap());
            assert_eq!(px, bytes(expected), "autocontrast cutoff {key}");
        }
        let mut px = img.clone();
        equalize(&mut px);
        assert_eq!(px, bytes(&fx["equalize"]), "equalize");
        for (key, expected) in fx["posterize"].as_object().unwrap() {
            let mut px = img.clone();
            posterize(&mut px, key.parse().unwrap());
            assert_eq!(px, bytes(expected), "posterize {key}");
        }
        for (key, expected) in fx["solarize"].as_object().unwrap() {
            let mut px = img.clone();
            solarize(&mut px, key.parse().unwrap());
            assert_eq!(px, bytes(expected), "solarize {key}");
        }
        for (key, expected) in fx["sharpness"].as_object().unwrap() {
            let mut px = img.clone();
            sharpness(&mut px, h, w, key.parse().unwrap());
            let expected = bytes(expected);
            let worst = px
                .iter()
                .zip(&expected)
                .map(|(a, b)| (i16::from(*a) - i16::from(*b)).abs())
                .max()
                .unwrap();
            assert!(worst == 0, "sharpness {key}: max difference {worst}");
        }
    }

    /// The shortcut formulas for HSV and HLS equal a full conversion round trip.
    #[test]
    fn brightness_shortcuts_match_full_conversions() {
        for &(r, g, b) in &[
            (200u8, 30u8, 90u8),
            (10, 10, 10),
            (255, 255, 0),
            (0, 128, 255),
        ] {
            let [rf, gf, bf] = [r, g, b].map(|v| f32::from(v) / 255.0);
            for l2 in [0.1f32, 0.5, 0.8] {
                let (h, _, s) = color::rgb_to_hls(rf, gf, bf);
                let full = color::hls_to_rgb(h, l2, s);
                let (max, min) = (rf.max(gf).max(bf), rf.min(gf).min(bf));
                let (c, l) = (max - min, 0.5 * (max + min));
                if c == 0.0 {
                    continue; // grey: handled by the `c <= 0` branch
                }
                let c2 = c * (1.0 - (2.0 * l2 - 1.0).abs()) / (1.0 - (2.0 * l - 1.0).abs());
                let m2 = l2 - 0.5 * c2;
                let short = [rf, gf, bf].map(|v| m2 + c2 / c * (v - min));
                assert!(
                    (full.0 - short[0]).abs()
                        + (full.1 - short[1]).abs()
                        + (full.2 - short[2]).abs()
                        < 1e-4
                );
                let (h, s, v) = color::rgb_to_hsv(rf, gf, bf);
                let full = color::hsv_to_rgb(h, s, l2);
                let short = [rf, gf, bf].map(|x| x * l2 / v);
                assert!(
                    (full.0 - short[0]).abs()
                        + (full.1 - short[1]).abs()
                        + (full.2 - short[2]).abs()
                        < 1e-4
                );
            }
        }
    }
}
