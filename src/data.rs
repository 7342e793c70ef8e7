//! MVTec AD data: folder layout, listing, mask matching and loading.
//!
//! The MVTec AD layout (Bergmann et al., CVPR 2019) is
//!
//! ```text
//! <class>/train/good/*.png                    normal training images
//! <class>/test/<defect>/*.png                 test images; `good` = normal (label 0)
//! <class>/ground_truth/<defect>/<stem>_mask.png   0/255 masks, none for `good`
//! ```
//!
//! Several classes may sit under one root ([`open_classes`]). For training
//! without a test set, a plain folder of good images works too
//! ([`training_images`]). Images are loaded as RGB in `[0, 1]` and resized to
//! the model size with bilinear filtering (as DRAEM/DiffAD's `cv2.resize`);
//! masks are resized with nearest neighbour and binarised at `> 0`.
//!
//! ```
//! # fn main() -> diffad::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let good = dir.path().join("train").join("good");
//! std::fs::create_dir_all(&good).unwrap();
//! image::RgbImage::from_pixel(8, 8, image::Rgb([255, 0, 0])).save(good.join("000.png")).unwrap();
//! let class = diffad::data::MvtecClass::open(dir.path())?;
//! let img = diffad::data::load_image(&class.train[0], 4)?;
//! assert_eq!((img.height(), img.width()), (4, 4));
//! assert_eq!(img.view()[[2, 2, 0]], 1.0);
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::error::{Error, Result};

pub use diffad_synth::image::IMAGE_EXTENSIONS;
/// The CPU-side image types of the whole workspace (`ndarray`-backed, from
/// `diffad-synth`): RGB images in `[0, 1]` (`(H, W, 3)`) and single-channel
/// planes (`(H, W)`), which hold the ground-truth masks (0 or 1).
pub use diffad_synth::{images_to_tensor, tensor_to_images, Mask, Plane, RgbImage};

/// The name of the normal test (and training) folder in MVTec AD.
pub const GOOD: &str = "good";

/// Sorted image files directly inside `dir` (not recursive).
/// Errors: `dir` unreadable ([`Error::Io`]) or without images ([`Error::EmptyFolder`]).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    list_images_in(dir, false)
}

/// Sorted image files inside `dir`, also in its sub-folders when `recursive`
/// (`diffad_synth::image::list_images`, the workspace's one listing rule).
/// Errors as [`list_images`].
pub fn list_images_in(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let out = diffad_synth::image::list_images(dir, recursive).map_err(|e| match e {
        diffad_synth::Error::Io { path, source } => Error::Io { path, source },
        other => Error::Synth(other),
    })?;
    if out.is_empty() {
        return Err(Error::EmptyFolder {
            path: dir.to_path_buf(),
        });
    }
    Ok(out)
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    reader.decode().map_err(|source| Error::UnreadableImage {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads an image as RGB in `[0, 1]`, resized to `size x size` with bilinear
/// filtering (no resize if it already has that size). Grey and RGBA images
/// are converted to RGB (alpha dropped).
pub fn load_image(path: &Path, size: usize) -> Result<RgbImage> {
    let rgb = decode(path)?.to_rgb8();
    Ok(RgbImage::from_rgb8(&resize_rgb8(&rgb, size))?)
}

fn resize_rgb8(rgb: &image::RgbImage, size: usize) -> image::RgbImage {
    let s = size as u32;
    if rgb.width() == s && rgb.height() == s {
        rgb.clone()
    } else {
        image::imageops::resize(rgb, s, s, FilterType::Triangle)
    }
}

/// Loads a ground-truth mask, resized to `size x size` with nearest
/// neighbour and binarised at `> 0` (MVTec masks are 0/255).
pub fn load_mask(path: &Path, size: usize) -> Result<Mask> {
    let luma = decode(path)?.to_luma8();
    mask_from_luma(&luma, size)
}

/// Nearest-neighbour resize to `size x size`, then 1 where the value is `> 0`.
fn mask_from_luma(luma: &image::GrayImage, size: usize) -> Result<Mask> {
    let s = size as u32;
    let resized = if luma.width() == s && luma.height() == s {
        luma.clone()
    } else {
        image::imageops::resize(luma, s, s, FilterType::Nearest)
    };
    let values = resized
        .pixels()
        .map(|p| if p[0] > 0 { 1.0 } else { 0.0 })
        .collect();
    Ok(Mask::from_vec(size, size, values)?)
}

/// Loads many images in parallel (order preserved); the first failure wins.
pub fn load_images(paths: &[PathBuf], size: usize) -> Result<Vec<RgbImage>> {
    paths.par_iter().map(|p| load_image(p, size)).collect()
}

/// One test image of an MVTec AD class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSample {
    /// The image file.
    pub image: PathBuf,
    /// The defect type: the name of its `test/<defect>` folder (`good` = normal).
    pub defect: String,
    /// Its ground-truth mask; `None` for `good` images.
    pub mask: Option<PathBuf>,
}

impl TestSample {
    /// Whether the image is anomalous (label 1): its folder is not `good`.
    pub fn is_anomalous(&self) -> bool {
        self.defect != GOOD
    }

    /// The file stem (`000` for `000.png`), the key masks are matched by.
    pub fn stem(&self) -> String {
        file_stem(&self.image)
    }

    /// Loads the image and its mask at `size x size`. The mask must have the
    /// image's original size ([`Error::MaskSizeMismatch`] otherwise); `good`
    /// images get an empty mask.
    pub fn load(&self, size: usize) -> Result<(RgbImage, Mask)> {
        let rgb = decode(&self.image)?.to_rgb8();
        let mask = match &self.mask {
            None => Mask::zeros(size, size)?,
            Some(mask_path) => {
                let luma = decode(mask_path)?.to_luma8();
                if luma.dimensions() != rgb.dimensions() {
                    return Err(Error::MaskSizeMismatch {
                        mask: mask_path.clone(),
                        image: self.image.clone(),
                        mask_width: luma.width(),
                        mask_height: luma.height(),
                        image_width: rgb.width(),
                        image_height: rgb.height(),
                    });
                }
                mask_from_luma(&luma, size)?
            }
        };
        Ok((RgbImage::from_rgb8(&resize_rgb8(&rgb, size))?, mask))
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One MVTec AD class folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MvtecClass {
    /// The class name (the folder's name, e.g. `bottle`).
    pub name: String,
    /// The class folder.
    pub root: PathBuf,
    /// Images of `train/good` (empty when the class has no training split).
    pub train: Vec<PathBuf>,
    /// Test images of every `test/<defect>` folder, defects sorted by name.
    pub test: Vec<TestSample>,
}

impl MvtecClass {
    /// Lists a class folder. It must hold `train/good` or `test/` (or both).
    /// With a `ground_truth/` folder, every defective test image must have
    /// `ground_truth/<defect>/<stem>_mask.png` ([`Error::MissingMask`]) and
    /// every mask must match a test image ([`Error::OrphanMask`]); without one
    /// the test images have no masks ([`MvtecClass::has_masks`] is false) and
    /// only image-level metrics can be computed. Empty image folders are
    /// [`Error::EmptyFolder`].
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Layout {
                path: dir.to_path_buf(),
                reason: "not a folder".into(),
            });
        }
        let train_dir = dir.join("train").join(GOOD);
        let test_dir = dir.join("test");
        if !train_dir.is_dir() && !test_dir.is_dir() {
            return Err(Error::Layout {
                path: dir.to_path_buf(),
                reason: "expected `train/good` and/or `test/<defect>` sub-folders".into(),
            });
        }
        let train = if train_dir.is_dir() {
            list_images(&train_dir)?
        } else {
            Vec::new()
        };
        let test = if test_dir.is_dir() {
            list_test(dir, &test_dir)?
        } else {
            Vec::new()
        };
        Ok(Self {
            name: file_stem(dir),
            root: dir.to_path_buf(),
            train,
            test,
        })
    }

    /// Like [`MvtecClass::open`], and requires a non-empty test split.
    pub fn open_for_eval(dir: &Path) -> Result<Self> {
        let class = Self::open(dir)?;
        if class.test.is_empty() {
            return Err(Error::Layout {
                path: dir.to_path_buf(),
                reason: "no `test/<defect>` folders to evaluate on".into(),
            });
        }
        Ok(class)
    }

    /// Whether every anomalous test image has a ground-truth mask (false for
    /// a test split without a `ground_truth/` folder).
    pub fn has_masks(&self) -> bool {
        self.test
            .iter()
            .all(|s| !s.is_anomalous() || s.mask.is_some())
    }

    /// Defect types of the test split, sorted, `good` included.
    pub fn defects(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.test.iter().map(|s| s.defect.as_str()).collect();
        set.into_iter().map(str::to_owned).collect()
    }
}

fn list_test(class_dir: &Path, test_dir: &Path) -> Result<Vec<TestSample>> {
    let defect_dirs = sorted_subdirs(test_dir)?;
    if defect_dirs.is_empty() {
        return Err(Error::Layout {
            path: test_dir.to_path_buf(),
            reason: "no `<defect>` sub-folders".into(),
        });
    }
    let gt_root = class_dir.join("ground_truth");
    let masks_expected = gt_root.is_dir();
    let mut samples = Vec::new();
    for defect_dir in defect_dirs {
        let defect = file_stem(&defect_dir);
        let images = list_images(&defect_dir)?;
        let mut stems = BTreeSet::new();
        for image in images {
            let stem = file_stem(&image);
            let mask = if defect == GOOD || !masks_expected {
                None
            } else {
                let gt_dir = gt_root.join(&defect);
                let mvtec = gt_dir.join(format!("{stem}_mask.png"));
                // VisA and other MVTec-style exports name masks `<stem>.png`.
                let plain = gt_dir.join(format!("{stem}.png"));
                if mvtec.is_file() {
                    Some(mvtec)
                } else if plain.is_file() {
                    Some(plain)
                } else {
                    return Err(Error::MissingMask {
                        image,
                        expected: mvtec,
                    });
                }
            };
            stems.insert(stem);
            samples.push(TestSample {
                image,
                defect: defect.clone(),
                mask,
            });
        }
        check_orphan_masks(&gt_root.join(&defect), &defect_dir, &stems)?;
    }
    // Masks for defects that have no test folder at all.
    if gt_root.is_dir() {
        for gt_dir in sorted_subdirs(&gt_root)? {
            let defect = file_stem(&gt_dir);
            let defect_dir = test_dir.join(&defect);
            if !defect_dir.is_dir() {
                check_orphan_masks(&gt_dir, &defect_dir, &BTreeSet::new())?;
            }
        }
    }
    Ok(samples)
}

fn check_orphan_masks(gt_dir: &Path, defect_dir: &Path, stems: &BTreeSet<String>) -> Result<()> {
    if !gt_dir.is_dir() {
        return Ok(());
    }
    let mut masks: Vec<PathBuf> = fs::read_dir(gt_dir)
        .map_err(|e| Error::io(gt_dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(gt_dir, err)))
        .collect::<Result<_>>()?;
    masks.retain(|p| diffad_synth::image::is_image_file(p));
    masks.sort();
    for mask in masks {
        let stem = file_stem(&mask);
        let image_stem = stem.strip_suffix("_mask").unwrap_or(&stem);
        if !stems.contains(image_stem) {
            return Err(Error::OrphanMask {
                expected: defect_dir.join(format!("{image_stem}.png")),
                mask,
            });
        }
    }
    Ok(())
}

/// Opens every class under `root`: `root` itself if it is a class folder,
/// otherwise each sub-folder holding `train/` or `test/`, sorted by name.
pub fn open_classes(root: &Path) -> Result<Vec<MvtecClass>> {
    if root.join("train").is_dir() || root.join("test").is_dir() {
        return Ok(vec![MvtecClass::open(root)?]);
    }
    if !root.is_dir() {
        return Err(Error::Layout {
            path: root.to_path_buf(),
            reason: "not a folder".into(),
        });
    }
    let classes: Vec<MvtecClass> = sorted_subdirs(root)?
        .into_iter()
        .filter(|d| d.join("train").is_dir() || d.join("test").is_dir())
        .map(|d| MvtecClass::open(&d))
        .collect::<Result<_>>()?;
    if classes.is_empty() {
        return Err(Error::Layout {
            path: root.to_path_buf(),
            reason: "no class folders with `train/good` or `test/` inside".into(),
        });
    }
    Ok(classes)
}

/// The good training images of `dir`: `dir/train/good` for an MVTec class
/// folder, otherwise the images directly inside `dir` (a plain folder of good
/// images).
pub fn training_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::Layout {
            path: dir.to_path_buf(),
            reason: "not a folder".into(),
        });
    }
    let train_good = dir.join("train").join(GOOD);
    if train_good.is_dir() {
        list_images(&train_good)
    } else if dir.join("train").is_dir() {
        Err(Error::Layout {
            path: dir.join("train"),
            reason: "expected a `good` sub-folder".into(),
        })
    } else {
        list_images(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_rgb(path: &Path, w: u32, h: u32, v: u8) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
            .save(path)
            .unwrap();
    }

    fn write_mask(path: &Path, w: u32, h: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x < w / 2 { 255 } else { 0 }]))
            .save(path)
            .unwrap();
    }

    /// A two-defect MVTec class with 12x12 images.
    fn make_class(root: &Path) {
        for i in 0..3 {
            write_rgb(
                &root.join(format!("train/good/{i:03}.png")),
                12,
                12,
                10 * i as u8,
            );
        }
        write_rgb(&root.join("test/good/000.png"), 12, 12, 50);
        for defect in ["crack", "hole"] {
            for i in 0..2 {
                write_rgb(&root.join(format!("test/{defect}/{i:03}.png")), 12, 12, 90);
                write_mask(
                    &root.join(format!("ground_truth/{defect}/{i:03}_mask.png")),
                    12,
                    12,
                );
            }
        }
    }

    #[test]
    fn lists_a_class_and_matches_masks_by_stem() {
        let dir = tempfile::tempdir().unwrap();
        make_class(dir.path());
        let class = MvtecClass::open(dir.path()).unwrap();
        assert_eq!(class.train.len(), 3);
        assert_eq!(class.test.len(), 5);
        assert_eq!(class.defects(), vec!["crack", "good", "hole"]);
        let crack = &class.test[0];
        assert_eq!(crack.defect, "crack");
        assert!(crack.is_anomalous());
        assert_eq!(
            crack.mask.as_deref(),
            Some(dir.path().join("ground_truth/crack/000_mask.png").as_path())
        );
        let good: Vec<_> = class.test.iter().filter(|s| !s.is_anomalous()).collect();
        assert_eq!(good.len(), 1);
        assert!(good[0].mask.is_none());
    }

    #[test]
    fn loads_resized_rgb_and_nearest_binarised_masks() {
        let dir = tempfile::tempdir().unwrap();
        make_class(dir.path());
        let class = MvtecClass::open(dir.path()).unwrap();
        let (img, mask) = class.test[0].load(6).unwrap();
        assert_eq!((img.height(), img.width()), (6, 6));
        // Constant colour survives bilinear resizing exactly.
        assert!((img.view()[[3, 3, 0]] - 90.0 / 255.0).abs() < 1e-6);
        assert!((img.view()[[0, 5, 2]] - 165.0 / 255.0).abs() < 1e-6);
        // Left half anomalous, right half normal; only 0/1 values.
        assert_eq!(mask.sum(), 18.0);
        let m = mask.to_bool();
        assert!(m[[0, 0]] && m[[5, 2]] && !m[[0, 3]] && !m[[5, 5]]);
        assert!(mask.as_slice().iter().all(|&v| v == 0.0 || v == 1.0));
        let (_, good_mask) = class.test[2].load(6).unwrap();
        assert_eq!(good_mask.sum(), 0.0);
    }

    #[test]
    fn missing_mask_is_a_typed_error_naming_the_expected_path() {
        let dir = tempfile::tempdir().unwrap();
        make_class(dir.path());
        fs::remove_file(dir.path().join("ground_truth/hole/001_mask.png")).unwrap();
        match MvtecClass::open(dir.path()) {
            Err(Error::MissingMask { image, expected }) => {
                assert!(image.ends_with("test/hole/001.png"));
                assert!(expected.ends_with("ground_truth/hole/001_mask.png"));
            }
            other => panic!("expected MissingMask, got {other:?}"),
        }
    }

    #[test]
    fn orphan_and_mis_sized_masks_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        make_class(dir.path());
        write_mask(&dir.path().join("ground_truth/crack/007_mask.png"), 12, 12);
        let err = MvtecClass::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::OrphanMask { ref mask, .. } if mask.ends_with("007_mask.png"))
        );
        fs::remove_file(dir.path().join("ground_truth/crack/007_mask.png")).unwrap();

        write_mask(&dir.path().join("ground_truth/crack/001_mask.png"), 10, 12);
        let class = MvtecClass::open(dir.path()).unwrap();
        let err = class.test[1].load(8).unwrap_err();
        assert!(matches!(
            err,
            Error::MaskSizeMismatch {
                mask_width: 10,
                image_width: 12,
                ..
            }
        ));
        assert!(err.to_string().contains("001_mask.png"));
    }

    #[test]
    fn empty_folders_wrong_layout_and_corrupt_images_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("train/good")).unwrap();
        assert!(matches!(
            MvtecClass::open(dir.path()),
            Err(Error::EmptyFolder { ref path }) if path.ends_with("train/good")
        ));
        let other = tempfile::tempdir().unwrap();
        fs::create_dir_all(other.path().join("something")).unwrap();
        assert!(matches!(
            MvtecClass::open(other.path()),
            Err(Error::Layout { .. })
        ));
        assert!(matches!(
            training_images(&other.path().join("nope")),
            Err(Error::Layout { .. })
        ));

        let bad = dir.path().join("train/good/000.png");
        fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
        let err = load_image(&bad, 8).unwrap_err();
        assert!(matches!(err, Error::UnreadableImage { .. }));
        assert!(err.to_string().contains("000.png"));
    }

    #[test]
    fn plain_folders_and_several_classes() {
        let root = tempfile::tempdir().unwrap();
        make_class(&root.path().join("bottle"));
        make_class(&root.path().join("wood"));
        fs::create_dir_all(root.path().join("notes")).unwrap();
        let classes = open_classes(root.path()).unwrap();
        let names: Vec<_> = classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["bottle", "wood"]);
        assert_eq!(open_classes(&root.path().join("wood")).unwrap().len(), 1);

        let plain = tempfile::tempdir().unwrap();
        write_rgb(&plain.path().join("b.jpg"), 9, 7, 3);
        write_rgb(&plain.path().join("a.png"), 9, 7, 3);
        fs::write(plain.path().join("readme.txt"), "x").unwrap();
        let listed = training_images(plain.path()).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].ends_with("a.png"));
        assert_eq!(
            training_images(&root.path().join("bottle")).unwrap().len(),
            3
        );
        let imgs = load_images(&listed, 5).unwrap();
        assert_eq!(imgs[1].width(), 5);
    }

    #[test]
    fn tensor_round_trip_and_rgb8_conversion() {
        let mut img = RgbImage::zeros(2, 3).unwrap();
        img.view_mut()[[1, 2, 1]] = 0.5;
        img.view_mut()[[0, 0, 2]] = 1.0;
        let cpu = candle_core::Device::Cpu;
        let batch = images_to_tensor(&[img.clone(), img.clone()], &cpu).unwrap();
        assert_eq!(batch.dims(), &[2, 3, 2, 3]);
        let back = tensor_to_images(&batch).unwrap();
        assert_eq!(back[1], img);
        let rgb8 = img.to_rgb8();
        assert_eq!(rgb8.get_pixel(2, 1)[1], 128);
        assert_eq!(rgb8.get_pixel(0, 0)[2], 255);
        assert!(RgbImage::from_chw(2, 2, &[0.0; 5]).is_err());
        assert!(images_to_tensor(&[img, RgbImage::zeros(3, 3).unwrap()], &cpu).is_err());
    }
}
