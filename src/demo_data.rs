//! A small MVTec-AD-layout dataset made from built-in procedural textures,
//! for `diffad demo` and the tests: no download needed.
//!
//! Good images are one texture "class": a fixed [`PatternStyle`] (warped
//! wood-like stripes) rendered with a different random stream per image, so
//! they share their look and differ in detail. Test defects are drawn by
//! processes that are deliberately *different* from the DRAEM synthesis used
//! in training (Perlin-shaped blends of augmented textures): thin curved
//! **scratches**, tinted **stains** with soft irregular borders, dark
//! **holes** with a bright rim, and rectangular **foreign patches** of another
//! texture family. The demo is therefore not graded on its own training
//! distribution.
//!
//! Every file is derived from `(seed, split, index)` alone, so the dataset is
//! identical on every machine and thread count.
//!
//! ```
//! # fn main() -> diffad::Result<()> {
//! let out = tempfile::tempdir().unwrap();
//! let options = diffad::demo_data::DemoDataOptions { train: 2, test_good: 1, per_defect: 1, ..Default::default() };
//! let class_dir = diffad::demo_data::write_demo_dataset(out.path(), &options)?;
//! let class = diffad::data::MvtecClass::open(&class_dir)?;
//! assert_eq!(class.train.len(), 2);
//! assert_eq!(class.defects(), vec!["foreign_patch", "good", "hole", "scratch", "stain"]);
//! # Ok(()) }
//! ```

use std::f32::consts::{PI, TAU};
use std::fs;
use std::path::{Path, PathBuf};

use diffad_synth::{procedural_texture, PatternKind, PatternStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::{Mask, RgbImage};
use crate::error::{Error, Result};
use crate::io::save_png;

/// The defect types of the demo test split.
pub const DEMO_DEFECTS: [Defect; 4] = [
    Defect::Scratch,
    Defect::Stain,
    Defect::Hole,
    Defect::ForeignPatch,
];

/// A defect process of the demo test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// 1-3 thin curved strokes, all lighter or all darker than the surface.
    Scratch,
    /// A tinted, semi-transparent blob with an irregular soft border.
    Stain,
    /// A dark ellipse with a bright rim.
    Hole,
    /// A rotated rectangle of a different procedural texture family.
    ForeignPatch,
}

impl Defect {
    /// The `test/<defect>` folder name.
    pub fn name(self) -> &'static str {
        match self {
            Defect::Scratch => "scratch",
            Defect::Stain => "stain",
            Defect::Hole => "hole",
            Defect::ForeignPatch => "foreign_patch",
        }
    }

    /// Draws the defect into `img` and returns its ground-truth mask.
    pub fn apply(self, img: &mut RgbImage, rng: &mut ChaCha8Rng) -> Result<Mask> {
        let (h, w) = (img.height(), img.width());
        let mut mask = vec![false; h * w];
        match self {
            Defect::Scratch => scratch(img, &mut mask, rng),
            Defect::Stain => stain(img, &mut mask, rng),
            Defect::Hole => hole(img, &mut mask, rng),
            Defect::ForeignPatch => foreign_patch(img, &mut mask, rng)?,
        }
        Ok(Mask::from_bool(h, w, &mask)?)
    }
}

/// What [`write_demo_dataset`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoDataOptions {
    /// Class folder name.
    pub class_name: String,
    /// Image side in pixels.
    pub size: usize,
    /// Good training images.
    pub train: usize,
    /// Good test images.
    pub test_good: usize,
    /// Test images per defect type.
    pub per_defect: usize,
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for DemoDataOptions {
    fn default() -> Self {
        Self {
            class_name: "demo_wood".into(),
            size: 64,
            train: 48,
            test_good: 12,
            per_defect: 6,
            seed: 2023,
        }
    }
}

/// The style of the demo class: warped brown stripes with grain.
fn demo_style() -> PatternStyle {
    PatternStyle {
        kind: PatternKind::Stripes,
        colors: [[0.36, 0.22, 0.12], [0.58, 0.40, 0.24], [0.80, 0.64, 0.44]],
        frequency: 5.0,
        angle_degrees: 15.0,
        grain: 0.12,
    }
}

/// The RNG of item `index` of stream `split`: a pure function of the seed.
fn item_rng(seed: u64, split: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(split);
    rng.set_word_pos(u128::from(index) << 40);
    rng
}

/// Renders good image `index` of stream `split`.
pub fn good_image(size: usize, seed: u64, split: u64, index: u64) -> Result<RgbImage> {
    let mut rng = item_rng(seed, split, index);
    let rgb8 = demo_style().render(size, size, &mut rng)?;
    Ok(RgbImage::from_rgb8(&rgb8)?)
}

/// Renders a defective test image of `defect` and its mask.
pub fn defective_image(
    size: usize,
    seed: u64,
    defect: Defect,
    index: u64,
) -> Result<(RgbImage, Mask)> {
    let split = 10 + defect as u64;
    let mut img = good_image(size, seed, split, index)?;
    // A separate stream for the defect so its draw does not depend on how
    // many numbers the texture consumed.
    let mut rng = item_rng(seed ^ 0x005e_edde_fec7, split, index);
    let mask = defect.apply(&mut img, &mut rng)?;
    Ok((img, mask))
}

/// Writes the dataset as `<out>/<class_name>/{train/good, test/<defect>,
/// ground_truth/<defect>}` and returns the class folder. The class is built
/// in `<class_name>.tmp` and renamed at the end, so an interrupted run leaves
/// no half-written class; an existing class folder is an error.
pub fn write_demo_dataset(out: &Path, options: &DemoDataOptions) -> Result<PathBuf> {
    if options.size < 16 {
        return Err(Error::Shape(format!(
            "demo images must be at least 16 pixels wide, got {}",
            options.size
        )));
    }
    let class_dir = out.join(&options.class_name);
    if class_dir.exists() {
        return Err(Error::Layout {
            path: class_dir,
            reason: "already exists; choose another --out or remove it".into(),
        });
    }
    let tmp_dir = out.join(format!("{}.tmp", options.class_name));
    if tmp_dir.exists() {
        fs::remove_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
    }
    let result = write_class(&tmp_dir, options);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp_dir);
        return Err(e);
    }
    fs::rename(&tmp_dir, &class_dir).map_err(|e| Error::io(&class_dir, e))?;
    Ok(class_dir)
}

enum Job {
    Good {
        dir: &'static str,
        split: u64,
        index: usize,
    },
    Defective {
        defect: Defect,
        index: usize,
    },
}

fn write_class(dir: &Path, o: &DemoDataOptions) -> Result<()> {
    let mut jobs = Vec::new();
    jobs.extend((0..o.train).map(|index| Job::Good {
        dir: "train/good",
        split: 0,
        index,
    }));
    jobs.extend((0..o.test_good).map(|index| Job::Good {
        dir: "test/good",
        split: 1,
        index,
    }));
    for defect in DEMO_DEFECTS {
        jobs.extend((0..o.per_defect).map(|index| Job::Defective { defect, index }));
    }
    for sub in ["train/good", "test/good"] {
        fs::create_dir_all(dir.join(sub)).map_err(|e| Error::io(dir.join(sub), e))?;
    }
    for defect in DEMO_DEFECTS {
        for sub in ["test", "ground_truth"] {
            let d = dir.join(sub).join(defect.name());
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
    }
    jobs.par_iter().try_for_each(|job| match *job {
        Job::Good {
            dir: sub,
            split,
            index,
        } => {
            let img = good_image(o.size, o.seed, split, index as u64)?;
            save_png(
                &dir.join(sub).join(format!("{index:03}.png")),
                &img.to_rgb8().into(),
            )
        }
        Job::Defective { defect, index } => {
            let (img, mask) = defective_image(o.size, o.seed, defect, index as u64)?;
            let stem = format!("{index:03}");
            save_png(
                &dir.join("test")
                    .join(defect.name())
                    .join(format!("{stem}.png")),
                &img.to_rgb8().into(),
            )?;
            save_png(
                &dir.join("ground_truth")
                    .join(defect.name())
                    .join(format!("{stem}_mask.png")),
                &mask.to_luma8().into(),
            )
        }
    })
}

fn scratch(img: &mut RgbImage, mask: &mut [bool], rng: &mut ChaCha8Rng) {
    let (h, w) = (img.height(), img.width());
    let size = h.min(w) as f32;
    let strokes = rng.random_range(1..=3);
    let lighter = rng.random_bool(0.5);
    for _ in 0..strokes {
        let (mut y, mut x) = (
            rng.random_range(0.2..0.8) * h as f32,
            rng.random_range(0.2..0.8) * w as f32,
        );
        let mut angle: f32 = rng.random_range(0.0..TAU);
        let bend: f32 = rng.random_range(-0.04..0.04);
        let length = rng.random_range(0.3..0.6) * size;
        let radius = rng.random_range(0.6..1.2) * (size / 64.0).max(1.0);
        let mut travelled = 0.0;
        while travelled < length {
            paint_disk(img, mask, y, x, radius, |v| {
                if lighter {
                    1.0 - 0.25 * (1.0 - v)
                } else {
                    0.3 * v
                }
            });
            y += 0.5 * angle.sin();
            x += 0.5 * angle.cos();
            angle += bend;
            travelled += 0.5;
        }
    }
}

fn paint_disk(
    img: &mut RgbImage,
    mask: &mut [bool],
    cy: f32,
    cx: f32,
    r: f32,
    shade: impl Fn(f32) -> f32,
) {
    let (h, w) = (img.height() as isize, img.width() as isize);
    let (y0, y1) = ((cy - r).floor() as isize, (cy + r).ceil() as isize);
    let (x0, x1) = ((cx - r).floor() as isize, (cx + r).ceil() as isize);
    for y in y0.max(0)..=y1.min(h - 1) {
        for x in x0.max(0)..=x1.min(w - 1) {
            let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
            let i = (y * w + x) as usize;
            if dy * dy + dx * dx <= r * r && !mask[i] {
                mask[i] = true;
                for c in 0..3 {
                    let v = img.view()[[y as usize, x as usize, c]];
                    img.view_mut()[[y as usize, x as usize, c]] = shade(v);
                }
            }
        }
    }
}

/// Radius of a blob with an irregular border: `1 + sum_k a_k sin(k phi + p_k)`.
fn irregular_radius(harmonics: &[(f32, f32)], phi: f32) -> f32 {
    1.0 + harmonics
        .iter()
        .enumerate()
        .map(|(k, (a, p))| a * ((k as f32 + 2.0) * phi + p).sin())
        .sum::<f32>()
}

fn stain(img: &mut RgbImage, mask: &mut [bool], rng: &mut ChaCha8Rng) {
    let (h, w) = (img.height(), img.width());
    let size = h.min(w) as f32;
    let (cy, cx) = (
        rng.random_range(0.25..0.75) * h as f32,
        rng.random_range(0.25..0.75) * w as f32,
    );
    let radius = rng.random_range(0.1..0.2) * size;
    let harmonics: Vec<(f32, f32)> = (0..3)
        .map(|_| (rng.random_range(0.0..0.15), rng.random_range(0.0..TAU)))
        .collect();
    // Dark green-grey or bluish tint: colours the wood never has.
    let tint = if rng.random_bool(0.5) {
        [0.15, 0.35, 0.2]
    } else {
        [0.2, 0.25, 0.55]
    };
    let strength = rng.random_range(0.65..0.9);
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
            let d =
                (dy * dy + dx * dx).sqrt() / (radius * irregular_radius(&harmonics, dy.atan2(dx)));
            // Soft border: full strength inside 0.7, fading to 0 at 1.
            let alpha = strength * (1.0 - ((d - 0.7) / 0.3).clamp(0.0, 1.0));
            if alpha > 0.2 {
                mask[y * w + x] = true;
            }
            if alpha > 0.0 {
                for (c, t) in tint.iter().enumerate() {
                    let v = img.view()[[y, x, c]];
                    img.view_mut()[[y, x, c]] = (1.0 - alpha) * v + alpha * t * (0.5 + v);
                }
            }
        }
    }
}

fn hole(img: &mut RgbImage, mask: &mut [bool], rng: &mut ChaCha8Rng) {
    let (h, w) = (img.height(), img.width());
    let size = h.min(w) as f32;
    let (cy, cx) = (
        rng.random_range(0.25..0.75) * h as f32,
        rng.random_range(0.25..0.75) * w as f32,
    );
    let (ry, rx) = (
        rng.random_range(0.05..0.11) * size,
        rng.random_range(0.05..0.11) * size,
    );
    let rim = (size / 64.0).max(1.0);
    let angle: f32 = rng.random_range(0.0..PI);
    let (sin, cos) = angle.sin_cos();
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
            let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
            let d = ((u / rx).powi(2) + (v / ry).powi(2)).sqrt();
            let rim_d = rim / rx.min(ry);
            if d <= 1.0 {
                mask[y * w + x] = true;
                // Dark inside, a little lighter towards the lower edge (depth).
                let shade = 0.04 + 0.08 * (v / ry).clamp(0.0, 1.0);
                for c in 0..3 {
                    img.view_mut()[[y, x, c]] = shade;
                }
            } else if d <= 1.0 + rim_d {
                mask[y * w + x] = true;
                for c in 0..3 {
                    let p = img.view()[[y, x, c]];
                    img.view_mut()[[y, x, c]] = 0.5 * p + 0.5;
                }
            }
        }
    }
}

fn foreign_patch(img: &mut RgbImage, mask: &mut [bool], rng: &mut ChaCha8Rng) -> Result<()> {
    let (h, w) = (img.height(), img.width());
    let size = h.min(w) as f32;
    let kind = [
        PatternKind::Checks,
        PatternKind::Cellular,
        PatternKind::FractalNoise,
    ][rng.random_range(0..3)];
    let patch = RgbImage::from_rgb8(&procedural_texture(kind, h, w, rng.random())?)?;
    let (cy, cx) = (
        rng.random_range(0.3..0.7) * h as f32,
        rng.random_range(0.3..0.7) * w as f32,
    );
    let (hy, hx) = (
        rng.random_range(0.08..0.16) * size,
        rng.random_range(0.08..0.16) * size,
    );
    let angle: f32 = rng.random_range(0.0..PI);
    let (sin, cos) = angle.sin_cos();
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 + 0.5 - cy, x as f32 + 0.5 - cx);
            let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
            if u.abs() <= hx && v.abs() <= hy {
                mask[y * w + x] = true;
                for c in 0..3 {
                    img.view_mut()[[y, x, c]] = patch.view()[[y, x, c]];
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::MvtecClass;

    #[test]
    fn writes_a_valid_mvtec_class_with_non_empty_masks() {
        let out = tempfile::tempdir().unwrap();
        let options = DemoDataOptions {
            size: 32,
            train: 3,
            test_good: 2,
            per_defect: 2,
            ..Default::default()
        };
        let dir = write_demo_dataset(out.path(), &options).unwrap();
        assert!(!out.path().join("demo_wood.tmp").exists());
        let class = MvtecClass::open(&dir).unwrap();
        assert_eq!(class.train.len(), 3);
        assert_eq!(class.test.len(), 2 + 4 * 2);
        for sample in &class.test {
            let (img, mask) = sample.load(32).unwrap();
            assert_eq!(img.width(), 32);
            if sample.is_anomalous() {
                let frac = mask.sum() / (32.0 * 32.0);
                assert!(
                    frac > 0.003 && frac < 0.5,
                    "{}: {frac}",
                    sample.image.display()
                );
            } else {
                assert_eq!(mask.sum(), 0.0);
            }
        }
        // Writing again over an existing class is refused.
        assert!(matches!(
            write_demo_dataset(out.path(), &options),
            Err(Error::Layout { .. })
        ));
    }

    #[test]
    fn same_seed_same_images_and_defects_change_only_masked_pixels() {
        let a = good_image(32, 5, 0, 3).unwrap();
        assert_eq!(a, good_image(32, 5, 0, 3).unwrap());
        assert_ne!(a, good_image(32, 5, 0, 4).unwrap());
        for defect in DEMO_DEFECTS {
            let (img, mask) = defective_image(48, 5, defect, 1).unwrap();
            let clean = good_image(48, 5, 10 + defect as u64, 1).unwrap();
            let mut changed_inside = 0;
            for y in 0..48 {
                for x in 0..48 {
                    let diff: f32 = (0..3)
                        .map(|c| (img.view()[[y, x, c]] - clean.view()[[y, x, c]]).abs())
                        .sum();
                    if mask.view()[[y, x]] > 0.5 {
                        changed_inside += usize::from(diff > 0.02);
                    } else if defect != Defect::Stain {
                        // Only the stain's faint soft border leaks outside its mask.
                        assert_eq!(diff, 0.0, "{defect:?} changed an unmasked pixel");
                    } else {
                        assert!(diff < 0.6, "stain leaked {diff}");
                    }
                }
            }
            assert!(
                changed_inside * 2 > (mask.sum() as usize),
                "{defect:?}: only {changed_inside} of {} masked pixels changed",
                (mask.sum() as usize)
            );
        }
    }
}
