//! The surface classes of the real-photograph benchmark: one committed
//! photograph each (`assets/photos/<name>.png`, embedded in the binary), the
//! crop side in photograph pixels, and the split of the photograph into a
//! training part and a disjoint test part.

use image::imageops::{self, FilterType};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// One surface class: a photograph and how crops are cut from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhotoClass {
    /// Class folder name (`brick`, `grass`, ...).
    pub name: &'static str,
    /// What the photograph shows and where it comes from.
    pub source: &'static str,
    /// Side of a crop in photograph pixels, before resizing to the output
    /// size: the same piece of surface is shown at 64x64 and at 128x128.
    pub crop: u32,
    /// The PNG file (`assets/photos/<name>.png`).
    png: &'static [u8],
}

/// The classes, in the order they are written. The photographs are regions
/// of scikit-image 0.26.0's sample images (`scripts/photo_assets.py`
/// regenerates them from the installed wheel).
pub const PHOTO_CLASSES: [PhotoClass; 6] = [
    PhotoClass {
        name: "brick",
        source: "skimage brick.png (CC0Textures Bricks25), CC0",
        crop: 128,
        png: include_bytes!("../../assets/photos/brick.png"),
    },
    PhotoClass {
        name: "grass",
        source: "skimage grass.png (DeviantArt linolafett), CC0",
        crop: 128,
        png: include_bytes!("../../assets/photos/grass.png"),
    },
    PhotoClass {
        name: "gravel",
        source: "skimage gravel.png (CC0Textures Gravel04), CC0",
        crop: 128,
        png: include_bytes!("../../assets/photos/gravel.png"),
    },
    PhotoClass {
        name: "wood",
        source: "skimage coffee.png (table right of the cup, Rachel Michetti), CC0",
        crop: 96,
        png: include_bytes!("../../assets/photos/wood.png"),
    },
    PhotoClass {
        name: "tissue",
        source:
            "skimage ihc.png (IHC-stained colonic glands, CMMI), no known copyright restrictions",
        crop: 96,
        png: include_bytes!("../../assets/photos/tissue.png"),
    },
    PhotoClass {
        name: "retina",
        source: "skimage retina.jpg (fundus, Mikael Haggstrom, Wikimedia), CC0",
        crop: 128,
        png: include_bytes!("../../assets/photos/retina.png"),
    },
];

/// The class named `name`, or a [`Error::Config`] listing the known ones.
pub fn photo_class(name: &str) -> Result<PhotoClass> {
    PHOTO_CLASSES
        .iter()
        .find(|c| c.name == name)
        .copied()
        .ok_or_else(|| Error::Config {
            path: "--classes".into(),
            message: format!(
                "unknown photo class `{name}` (known: {})",
                PHOTO_CLASSES.map(|c| c.name).join(", ")
            ),
        })
}

/// Which part of a photograph a crop comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The first 60 % along the photograph's longer axis (rows when square).
    Train,
    /// The remaining 40 %: no training crop overlaps it.
    Test,
}

/// Fraction of the longer axis that belongs to [`Part::Train`].
pub const TRAIN_FRACTION: f64 = 0.6;

/// A decoded photograph with its train/test split.
#[derive(Clone, Debug)]
pub struct Photograph {
    class: PhotoClass,
    rgb: image::RgbImage,
}

/// A rectangle `(x, y, width, height)` in photograph pixels.
pub type Rect = (u32, u32, u32, u32);

impl PhotoClass {
    /// Decodes the embedded photograph and checks that both parts hold a crop.
    pub fn photograph(&self) -> Result<Photograph> {
        let asset = std::path::PathBuf::from(format!("assets/photos/{}.png", self.name));
        let rgb = image::load_from_memory_with_format(self.png, image::ImageFormat::Png)
            .map_err(|source| Error::UnreadableImage {
                path: asset.clone(),
                source,
            })?
            .to_rgb8();
        let photo = Photograph { class: *self, rgb };
        for part in [Part::Train, Part::Test] {
            let (_, _, w, h) = photo.part(part);
            if w < self.crop || h < self.crop {
                return Err(Error::Layout {
                    path: asset,
                    reason: format!(
                        "the {part:?} part is {w}x{h}, smaller than the {0}x{0} crop",
                        self.crop
                    ),
                });
            }
        }
        Ok(photo)
    }
}

impl Photograph {
    /// The photograph's size `(width, height)`.
    pub fn dimensions(&self) -> (u32, u32) {
        self.rgb.dimensions()
    }

    /// The rectangle of `part`: the photograph is cut across its longer axis
    /// (rows when square) at [`TRAIN_FRACTION`].
    pub fn part(&self, part: Part) -> Rect {
        let (w, h) = self.rgb.dimensions();
        let along_x = w > h;
        let long = if along_x { w } else { h };
        let cut = (f64::from(long) * TRAIN_FRACTION).round() as u32;
        let (start, len) = match part {
            Part::Train => (0, cut),
            Part::Test => (cut, long - cut),
        };
        if along_x {
            (start, 0, len, h)
        } else {
            (0, start, w, len)
        }
    }

    /// A random `crop x crop` square of `part`, flipped horizontally and/or
    /// vertically with probability 1/2 each, resized to `size x size`
    /// (Catmull-Rom, antialiased when shrinking). No rotation: the surfaces
    /// keep their natural orientation, as MVTec AD's textures do.
    pub fn random_crop(&self, part: Part, size: u32, rng: &mut ChaCha8Rng) -> image::RgbImage {
        let (x0, y0, w, h) = self.part(part);
        let c = self.class.crop;
        let x = x0 + rng.random_range(0..=w - c);
        let y = y0 + rng.random_range(0..=h - c);
        let mut crop = imageops::crop_imm(&self.rgb, x, y, c, c).to_image();
        if rng.random_bool(0.5) {
            imageops::flip_horizontal_in_place(&mut crop);
        }
        if rng.random_bool(0.5) {
            imageops::flip_vertical_in_place(&mut crop);
        }
        if c == size {
            crop
        } else {
            imageops::resize(&crop, size, size, FilterType::CatmullRom)
        }
    }
}
