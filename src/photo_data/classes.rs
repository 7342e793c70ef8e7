//! The surface classes of the real-photograph benchmark: one committed
//! photograph each (`assets/photos/<name>.png`, embedded in the binary), the
//! crop side in photograph pixels, and the split of the photograph into a
//! training part and a disjoint test part ([`Layout`]).

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
    /// Where the training and the test part lie in the photograph.
    pub layout: Layout,
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
        layout: Layout::TrainThenTest,
        png: include_bytes!("../../assets/photos/brick.png"),
    },
    PhotoClass {
        name: "grass",
        source: "skimage grass.png (DeviantArt linolafett), CC0",
        crop: 128,
        layout: Layout::TrainThenTest,
        png: include_bytes!("../../assets/photos/grass.png"),
    },
    PhotoClass {
        name: "gravel",
        source: "skimage gravel.png (CC0Textures Gravel04), CC0",
        crop: 128,
        layout: Layout::TrainThenTest,
        png: include_bytes!("../../assets/photos/gravel.png"),
    },
    PhotoClass {
        name: "wood",
        source: "skimage coffee.png (table right of the cup, Rachel Michetti), CC0",
        crop: 96,
        layout: Layout::TestBetweenTrain,
        png: include_bytes!("../../assets/photos/wood.png"),
    },
    PhotoClass {
        name: "tissue",
        source:
            "skimage ihc.png (IHC-stained colonic glands, CMMI), no known copyright restrictions",
        crop: 76,
        layout: Layout::TestBetweenTrain,
        png: include_bytes!("../../assets/photos/tissue.png"),
    },
    PhotoClass {
        name: "retina",
        source: "skimage retina.jpg (fundus, Mikael Haggstrom, Wikimedia), CC0",
        crop: 128,
        layout: Layout::TrainThenTest,
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
    /// The training part (see [`Layout`]).
    Train,
    /// The test part: no training crop overlaps it.
    Test,
}

/// How a photograph is cut into its training and test parts, across its
/// longer axis (rows when square).
///
/// A good test crop must look like the good training crops, as in MVTec AD,
/// where both are photographs of the same production: otherwise a detector
/// of anomalies is judged on how it handles a change of lighting or content
/// rather than on defects. Photographs that are uniform along their longer
/// axis take [`Layout::TrainThenTest`]; those with a gradient along it (the
/// light falling off across the coffee table, gland against stroma in the
/// tissue) take [`Layout::TestBetweenTrain`], so that the test part's
/// appearance lies inside the range the training part covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Training on the first [`TRAIN_FRACTION`] (60 %), test on the rest.
    TrainThenTest,
    /// Training on both ends (30 % each), test on the middle 40 %.
    TestBetweenTrain,
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
    /// Decodes the embedded photograph and checks that every rectangle of
    /// both parts holds a crop.
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
            for (_, _, w, h) in photo.rects(part) {
                if w < self.crop || h < self.crop {
                    return Err(Error::Layout {
                        path: asset,
                        reason: format!(
                            "a rectangle of the {part:?} part is {w}x{h}, smaller than the {0}x{0} crop",
                            self.crop
                        ),
                    });
                }
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

    /// The rectangles of `part` (one, or two for the training part of
    /// [`Layout::TestBetweenTrain`]): the photograph is cut across its longer
    /// axis (rows when square) as its class's [`Layout`] says.
    pub fn rects(&self, part: Part) -> Vec<Rect> {
        let (w, h) = self.rgb.dimensions();
        let along_x = w > h;
        let long = if along_x { w } else { h };
        let at = |f: f64| (f64::from(long) * f).round() as u32;
        let spans: Vec<(u32, u32)> = match (self.class.layout, part) {
            (Layout::TrainThenTest, Part::Train) => vec![(0, at(TRAIN_FRACTION))],
            (Layout::TrainThenTest, Part::Test) => {
                vec![(at(TRAIN_FRACTION), long - at(TRAIN_FRACTION))]
            }
            (Layout::TestBetweenTrain, Part::Train) => {
                let end = at(TRAIN_FRACTION / 2.0);
                vec![(0, end), (long - end, end)]
            }
            (Layout::TestBetweenTrain, Part::Test) => {
                let end = at(TRAIN_FRACTION / 2.0);
                vec![(end, long - 2 * end)]
            }
        };
        spans
            .into_iter()
            .map(|(start, len)| {
                if along_x {
                    (start, 0, len, h)
                } else {
                    (0, start, w, len)
                }
            })
            .collect()
    }

    /// A random `crop x crop` square of `part`, flipped horizontally and/or
    /// vertically with probability 1/2 each, resized to `size x size`
    /// (Catmull-Rom, antialiased when shrinking). No rotation: the surfaces
    /// keep their natural orientation, as MVTec AD's textures do.
    ///
    /// Every crop position of the part is equally likely (a rectangle is
    /// chosen in proportion to the positions it holds).
    pub fn random_crop(&self, part: Part, size: u32, rng: &mut ChaCha8Rng) -> image::RgbImage {
        let c = self.class.crop;
        let rects = self.rects(part);
        let positions = |&(_, _, w, h): &Rect| u64::from(w - c + 1) * u64::from(h - c + 1);
        let (x0, y0, w, h) = if rects.len() == 1 {
            rects[0]
        } else {
            let mut pick = rng.random_range(0..rects.iter().map(positions).sum::<u64>());
            let mut chosen = rects[rects.len() - 1];
            for r in &rects {
                if pick < positions(r) {
                    chosen = *r;
                    break;
                }
                pick -= positions(r);
            }
            chosen
        };
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
