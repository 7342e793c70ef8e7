//! Texture sources for the anomaly content `T` (DRAEM section 3.3: DTD images;
//! here any folder, a built-in procedural generator, or the image itself;
//! `docs/reference.md` §1).
//!
//! Files are read through [`crate::image::load_rgb8`]; a corrupt file skipped
//! under [`CorruptFilePolicy::SkipWithWarning`] is reported with
//! `log::warn!`, which the application decides whether to show.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ::image::RgbImage as Rgb8Image;
use rand::{seq::SliceRandom, Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::{random_augment, AugmenterKind};
use crate::error::{check_size, Error, Result};
use crate::geometry::resize_rgb8;
use crate::image::{list_images, load_rgb8, RgbImage};
use crate::perlin::fractal_perlin_2d;

/// Where anomaly textures come from. Implementations must be deterministic
/// given `rng` (the synthesizer's per-sample stream), so that results do not
/// depend on the thread count.
pub trait TextureSource: Send + Sync {
    /// Draws one texture the size of `normal` (the image being corrupted).
    fn draw(&self, normal: &RgbImage, rng: &mut dyn RngCore) -> Result<Rgb8Image>;

    /// Whether the synthesizer should still apply its random augmenters to
    /// the drawn texture (true for DRAEM's DTD textures; false for sources
    /// that augment themselves, like [`SelfAugmentation`]).
    fn needs_augmentation(&self) -> bool {
        true
    }
}

/// What to do with an image file that cannot be read or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CorruptFilePolicy {
    /// Return [`Error::Decode`] / [`Error::Io`] naming the file (default).
    #[default]
    Error,
    /// Log a warning (`log::warn!`, target `diffad_synth::texture`) once per
    /// file, remember it in [`FolderTextures::skipped`], and draw another
    /// file.
    SkipWithWarning,
}

/// Options of [`FolderTextures::open`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FolderOptions {
    /// Handling of unreadable files.
    pub on_corrupt: CorruptFilePolicy,
    /// Decode every file once at `open` and keep it in memory resized to
    /// `(height, width)`. Without it each draw decodes one file from disk, as
    /// DRAEM's data loader does (slow for large JPEGs; 256x256 RGB costs
    /// 192 KiB per cached image).
    pub preload: Option<(usize, usize)>,
}

/// A folder of texture images, searched recursively for the image files of
/// [`crate::image::IMAGE_EXTENSIONS`] (case-insensitive), e.g. DTD's
/// `images/<category>/*.jpg`.
/// Each draw picks a file uniformly and resizes it to the image size with
/// bilinear sampling (DRAEM: `cv2.resize`).
#[derive(Debug)]
pub struct FolderTextures {
    root: PathBuf,
    files: Vec<PathBuf>,
    cache: Option<Vec<Rgb8Image>>,
    options: FolderOptions,
    bad: Mutex<HashSet<usize>>,
}

impl FolderTextures {
    /// Lists (and with `preload`, decodes) the images under `root`.
    ///
    /// Errors: [`Error::Io`] if `root` cannot be read, [`Error::EmptyTextureFolder`]
    /// if no usable image is found, [`Error::Decode`] for a corrupt file when
    /// preloading with [`CorruptFilePolicy::Error`].
    pub fn open(root: impl AsRef<Path>, options: FolderOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if let Some((h, w)) = options.preload {
            check_size(h, w)?;
        }
        let mut files = list_images(&root, true)?;
        if files.is_empty() {
            return Err(Error::EmptyTextureFolder { path: root });
        }
        let mut cache = None;
        if let Some((h, w)) = options.preload {
            let loaded: Vec<(PathBuf, Result<Rgb8Image>)> = files
                .par_iter()
                .map(|p| {
                    (
                        p.clone(),
                        load_rgb8(p).and_then(|img| resize_rgb8(&img, h, w)),
                    )
                })
                .collect();
            let mut kept_files = Vec::new();
            let mut images = Vec::new();
            for (path, res) in loaded {
                match (res, options.on_corrupt) {
                    (Ok(img), _) => {
                        kept_files.push(path);
                        images.push(img);
                    }
                    (Err(e), CorruptFilePolicy::Error) => return Err(e),
                    (Err(e), CorruptFilePolicy::SkipWithWarning) => {
                        log::warn!("skipping texture: {e}");
                    }
                }
            }
            if images.is_empty() {
                return Err(Error::EmptyTextureFolder { path: root });
            }
            files = kept_files;
            cache = Some(images);
        }
        Ok(Self {
            root,
            files,
            cache,
            options,
            bad: Mutex::new(HashSet::new()),
        })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The usable image files, sorted.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Files skipped so far because they could not be decoded (only with
    /// [`CorruptFilePolicy::SkipWithWarning`] and without preloading).
    pub fn skipped(&self) -> Vec<PathBuf> {
        let bad = self.bad.lock().map(|b| b.clone()).unwrap_or_default();
        let mut out: Vec<PathBuf> = bad.iter().map(|&i| self.files[i].clone()).collect();
        out.sort();
        out
    }
}

impl TextureSource for FolderTextures {
    fn draw(&self, normal: &RgbImage, rng: &mut dyn RngCore) -> Result<Rgb8Image> {
        let (h, w) = (normal.height(), normal.width());
        if let Some(cache) = &self.cache {
            let img = &cache[rng.random_range(0..cache.len())];
            return resize_rgb8(img, h, w);
        }
        // Each attempt consumes one draw whether or not the file is already
        // known to be bad, so the sequence does not depend on which thread
        // discovered a bad file first.
        let max_attempts = 16 * self.files.len() + 64;
        for _ in 0..max_attempts {
            let i = rng.random_range(0..self.files.len());
            let known_bad = self.bad.lock().map(|b| b.contains(&i)).unwrap_or(false);
            if known_bad {
                continue;
            }
            match load_rgb8(&self.files[i]).and_then(|img| resize_rgb8(&img, h, w)) {
                Ok(img) => return Ok(img),
                Err(e) => match self.options.on_corrupt {
                    CorruptFilePolicy::Error => return Err(e),
                    CorruptFilePolicy::SkipWithWarning => {
                        if let Ok(mut bad) = self.bad.lock() {
                            if bad.insert(i) {
                                log::warn!("skipping texture: {e}");
                            }
                        }
                    }
                },
            }
        }
        Err(Error::EmptyTextureFolder {
            path: self.root.clone(),
        })
    }
}

/// Textures held in memory (e.g. decoded once by the caller); each draw
/// picks one uniformly and resizes it to the image size.
#[derive(Clone, Debug)]
pub struct InMemoryTextures {
    images: Vec<Rgb8Image>,
}

impl InMemoryTextures {
    /// Errors with [`Error::EmptyTextureFolder`] (path `<memory>`) on an empty
    /// list and [`Error::ZeroSizedImage`] on an empty image.
    pub fn new(images: Vec<Rgb8Image>) -> Result<Self> {
        if images.is_empty() {
            return Err(Error::EmptyTextureFolder {
                path: PathBuf::from("<memory>"),
            });
        }
        for img in &images {
            check_size(img.height() as usize, img.width() as usize)?;
        }
        Ok(Self { images })
    }

    /// The stored images.
    pub fn images(&self) -> &[Rgb8Image] {
        &self.images
    }
}

impl TextureSource for InMemoryTextures {
    fn draw(&self, normal: &RgbImage, rng: &mut dyn RngCore) -> Result<Rgb8Image> {
        let img = &self.images[rng.random_range(0..self.images.len())];
        resize_rgb8(img, normal.height(), normal.width())
    }
}

/// A family of procedural patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatternKind {
    /// Fractal (4-octave) Perlin noise mapped through a colour ramp.
    FractalNoise,
    /// Sinusoidal stripes, warped by low-frequency noise (wood/fabric-like).
    Stripes,
    /// A rotated checkerboard.
    Checks,
    /// Cellular (Worley) noise: distance to the nearest jittered feature point.
    Cellular,
}

impl PatternKind {
    /// All four kinds.
    pub const ALL: [PatternKind; 4] = [
        Self::FractalNoise,
        Self::Stripes,
        Self::Checks,
        Self::Cellular,
    ];
}

/// The look of a procedural texture: kind, colour ramp and scale. Rendering
/// one style with different random streams gives images that differ in
/// detail but share their appearance, which is what a "good" texture class
/// needs (see [`PatternStyle::render`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PatternStyle {
    /// Pattern family.
    pub kind: PatternKind,
    /// Colour ramp: value 0 maps to `colors[0]`, 0.5 to `colors[1]`, 1 to
    /// `colors[2]` (RGB in `[0, 1]`), linearly in between.
    pub colors: [[f32; 3]; 3],
    /// Number of features (noise cells, stripe periods, checker cells,
    /// Worley cells) across the shorter image side; at least 1 (features
    /// are never smaller than one pixel).
    pub frequency: f32,
    /// Orientation of stripes and checks, degrees.
    pub angle_degrees: f32,
    /// Amplitude of the fine fractal "grain" added to the pattern value
    /// (0 = clean synthetic pattern).
    pub grain: f32,
}

impl PatternStyle {
    /// A random style of the given kind: random colours, frequency 2..12,
    /// angle 0..180, grain 0.05..0.25.
    pub fn random<R: RngCore + ?Sized>(kind: PatternKind, rng: &mut R) -> Self {
        let mut color = || -> [f32; 3] { [rng.random(), rng.random(), rng.random()] };
        let colors = [color(), color(), color()];
        Self {
            kind,
            colors,
            frequency: rng.random_range(2.0..12.0),
            angle_degrees: rng.random_range(0.0..180.0),
            grain: rng.random_range(0.05..0.25),
        }
    }

    /// Renders the style at `height x width`; `rng` supplies the phase, the
    /// noise lattices and the feature points.
    pub fn render<R: RngCore + ?Sized>(
        &self,
        height: usize,
        width: usize,
        rng: &mut R,
    ) -> Result<Rgb8Image> {
        check_size(height, width)?;
        if !(self.frequency.is_finite() && self.frequency >= 1.0) {
            return Err(Error::InvalidConfig {
                field: "frequency",
                reason: format!("{} must be finite and >= 1", self.frequency),
            });
        }
        if !(self.grain.is_finite() && self.angle_degrees.is_finite())
            || self.colors.iter().flatten().any(|c| !c.is_finite())
        {
            return Err(Error::NonFinite("pattern style"));
        }
        let side = height.min(width) as f32;
        // Pixels per feature; at least one pixel, so that absurd frequencies
        // on small images cannot blow up the feature-point grid.
        let period = (side / self.frequency).max(1.0);
        let a = self.angle_degrees.to_radians();
        let (sin, cos) = (a.sin(), a.cos());
        // Lattice resolution giving cells of about `period` pixels.
        let r = |n: usize| ((n as f32 / period).round() as usize).clamp(1, n);
        let lattice = (r(height), r(width));
        let mut value = vec![0.0f32; height * width];
        match self.kind {
            PatternKind::FractalNoise => {
                let n = fractal_perlin_2d(height, width, lattice, 4, 0.5, rng)?;
                for (v, &x) in value.iter_mut().zip(n.as_slice()) {
                    *v = 0.5 + 0.7 * x;
                }
            }
            PatternKind::Stripes => {
                let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
                let warp_res = (
                    (height as f32 / period / 2.0).ceil().max(1.0) as usize,
                    (width as f32 / period / 2.0).ceil().max(1.0) as usize,
                );
                let warp = fractal_perlin_2d(height, width, warp_res, 2, 0.5, rng)?;
                for (i, v) in value.iter_mut().enumerate() {
                    let (y, x) = ((i / width) as f32, (i % width) as f32);
                    let u = x * cos + y * sin + 0.5 * period * warp.as_slice()[i];
                    *v = 0.5 + 0.5 * (std::f32::consts::TAU * u / period + phase).sin();
                }
            }
            PatternKind::Checks => {
                let (ou, ov): (f32, f32) =
                    (rng.random_range(0.0..period), rng.random_range(0.0..period));
                for (i, v) in value.iter_mut().enumerate() {
                    let (y, x) = ((i / width) as f32, (i % width) as f32);
                    let u = ((x * cos + y * sin + ou) / period).floor() as i64;
                    let w = ((-x * sin + y * cos + ov) / period).floor() as i64;
                    *v = if (u + w).rem_euclid(2) == 0 {
                        0.15
                    } else {
                        0.85
                    };
                }
            }
            PatternKind::Cellular => worley(&mut value, height, width, period, rng),
        }
        if self.grain > 0.0 {
            let fine = ((lattice.0 * 4).min(height), (lattice.1 * 4).min(width));
            let g = fractal_perlin_2d(height, width, fine, 3, 0.5, rng)?;
            for (v, &x) in value.iter_mut().zip(g.as_slice()) {
                *v += self.grain * x;
            }
        }
        let mut raw = Vec::with_capacity(height * width * 3);
        for &v in &value {
            let t = v.clamp(0.0, 1.0);
            let (lo, hi, f) = if t < 0.5 {
                (self.colors[0], self.colors[1], t * 2.0)
            } else {
                (self.colors[1], self.colors[2], t * 2.0 - 1.0)
            };
            for c in 0..3 {
                raw.push(((lo[c] + f * (hi[c] - lo[c])).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        Rgb8Image::from_raw(width as u32, height as u32, raw).ok_or(Error::BufferLength {
            shape: vec![height, width, 3],
            expected: height * width * 3,
            found: 0,
        })
    }
}

/// Worley noise: `min distance to a jittered grid point / period`, one
/// feature point per grid cell, searching the 3x3 neighbouring cells.
fn worley<R: RngCore + ?Sized>(value: &mut [f32], h: usize, w: usize, period: f32, rng: &mut R) {
    let gh = (h as f32 / period).ceil() as usize + 1;
    let gw = (w as f32 / period).ceil() as usize + 1;
    let points: Vec<(f32, f32)> = (0..gh * gw)
        .map(|k| {
            let (gy, gx) = ((k / gw) as f32, (k % gw) as f32);
            (
                (gy + rng.random::<f32>()) * period,
                (gx + rng.random::<f32>()) * period,
            )
        })
        .collect();
    for (i, v) in value.iter_mut().enumerate() {
        let (y, x) = ((i / w) as f32, (i % w) as f32);
        let (cy, cx) = ((y / period) as isize, (x / period) as isize);
        let mut best = f32::INFINITY;
        for yy in cy - 1..=cy + 1 {
            for xx in cx - 1..=cx + 1 {
                if yy < 0 || xx < 0 || yy as usize >= gh || xx as usize >= gw {
                    continue;
                }
                let (py, px) = points[yy as usize * gw + xx as usize];
                best = best.min((py - y) * (py - y) + (px - x) * (px - x));
            }
        }
        *v = (best.sqrt() / period).min(1.0);
    }
}

/// A procedural texture from a single seed: a random [`PatternStyle`] of
/// `kind` rendered at `height x width`. Same seed, same image.
pub fn procedural_texture(
    kind: PatternKind,
    height: usize,
    width: usize,
    seed: u64,
) -> Result<Rgb8Image> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    PatternStyle::random(kind, &mut rng).render(height, width, &mut rng)
}

/// The built-in texture source needing no files: each draw picks a kind
/// uniformly from `kinds`, a random [`PatternStyle`], and renders it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProceduralTextures {
    kinds: Vec<PatternKind>,
}

impl Default for ProceduralTextures {
    fn default() -> Self {
        Self {
            kinds: PatternKind::ALL.to_vec(),
        }
    }
}

impl ProceduralTextures {
    /// A source drawing from the given kinds (errors when empty).
    pub fn new(kinds: Vec<PatternKind>) -> Result<Self> {
        if kinds.is_empty() {
            return Err(Error::InvalidConfig {
                field: "kinds",
                reason: "at least one pattern kind is needed".into(),
            });
        }
        Ok(Self { kinds })
    }
}

impl TextureSource for ProceduralTextures {
    fn draw(&self, normal: &RgbImage, rng: &mut dyn RngCore) -> Result<Rgb8Image> {
        let kind = self.kinds[rng.random_range(0..self.kinds.len())];
        PatternStyle::random(kind, rng).render(normal.height(), normal.width(), rng)
    }
}

/// Self-augmentation (DiffusionAD, MemSeg): the texture is the normal image
/// itself, passed through `count` random DRAEM augmenters and cut into a
/// `grid x grid` array of tiles that are randomly permuted.
///
/// When the size is not a multiple of `grid`, tiles are `floor(H / grid) x
/// floor(W / grid)` and the remaining bottom rows / right columns stay in
/// place.
#[derive(Clone, Debug, PartialEq)]
pub struct SelfAugmentation {
    /// Tiles per side (8 in DiffusionAD/MemSeg).
    pub grid: usize,
    /// Augmenters drawn from.
    pub augmenters: Vec<AugmenterKind>,
    /// How many are applied (3, without replacement).
    pub count: usize,
}

impl Default for SelfAugmentation {
    fn default() -> Self {
        Self {
            grid: 8,
            augmenters: AugmenterKind::ALL.to_vec(),
            count: 3,
        }
    }
}

impl TextureSource for SelfAugmentation {
    fn draw(&self, normal: &RgbImage, rng: &mut dyn RngCore) -> Result<Rgb8Image> {
        if self.grid == 0 {
            return Err(Error::InvalidConfig {
                field: "grid",
                reason: "grid must be at least 1".into(),
            });
        }
        let mut img = normal.to_rgb8();
        random_augment(&mut img, &self.augmenters, self.count, rng);
        Ok(shuffle_tiles(&img, self.grid, rng))
    }

    fn needs_augmentation(&self) -> bool {
        false
    }
}

/// Cuts `img` into `grid x grid` tiles and permutes them uniformly.
pub fn shuffle_tiles<R: RngCore + ?Sized>(img: &Rgb8Image, grid: usize, rng: &mut R) -> Rgb8Image {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (th, tw) = (h / grid.max(1), w / grid.max(1));
    let mut out = img.clone();
    if th == 0 || tw == 0 {
        return out;
    }
    let mut order: Vec<usize> = (0..grid * grid).collect();
    order.shuffle(rng);
    let src = img.as_raw();
    let dst: &mut [u8] = &mut out;
    for (to, &from) in order.iter().enumerate() {
        let (ty, tx) = (to / grid, to % grid);
        let (fy, fx) = (from / grid, from % grid);
        for r in 0..th {
            let s = ((fy * th + r) * w + fx * tw) * 3;
            let d = ((ty * th + r) * w + tx * tw) * 3;
            dst[d..d + tw * 3].copy_from_slice(&src[s..s + tw * 3]);
        }
    }
    out
}
