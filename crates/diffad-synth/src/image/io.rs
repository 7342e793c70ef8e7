//! Reading and writing image files. Every error names the file.

use std::path::{Path, PathBuf};

use super::{Plane, RgbImage};
use crate::error::{check_size, Error, Result};

/// File extensions recognised as images (case-insensitive), by every image
/// listing of the workspace (texture folders, MVTec AD folders).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Whether `path` is a file with one of the [`IMAGE_EXTENSIONS`].
pub fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files ([`is_image_file`]) in `dir`, searched in its
/// sub-folders too when `recursive`, sorted. [`Error::Io`] names the folder
/// that could not be read; an empty result is not an error here.
pub fn list_images(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_dir() {
                if recursive {
                    walk(&path, recursive, out)?;
                }
            } else if is_image_file(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, recursive, &mut out)?;
    out.sort();
    Ok(out)
}

/// Decodes an image file (any format the `image` crate decodes, detected
/// from its content) as 8-bit RGB, naming the file in any error:
/// [`Error::Io`] if it cannot be read, [`Error::Decode`] if it cannot be
/// decoded, [`Error::ZeroSizedImage`] if it is empty.
pub fn load_rgb8(path: &Path) -> Result<::image::RgbImage> {
    non_empty(decode(path)?.to_rgb8())
}

/// Decodes an image file as 8-bit grey, errors as [`load_rgb8`].
fn load_luma8(path: &Path) -> Result<::image::GrayImage> {
    non_empty(decode(path)?.to_luma8())
}

/// Errors with [`Error::ZeroSizedImage`] on an image without pixels.
fn non_empty<P: ::image::Pixel>(
    img: ::image::ImageBuffer<P, Vec<P::Subpixel>>,
) -> Result<::image::ImageBuffer<P, Vec<P::Subpixel>>> {
    check_size(img.height() as usize, img.width() as usize)?;
    Ok(img)
}

fn decode(path: &Path) -> Result<::image::DynamicImage> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    ::image::ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)?
        .decode()
        .map_err(|source| Error::Decode {
            path: path.to_path_buf(),
            source,
        })
}

fn encode_error(path: &Path) -> impl FnOnce(::image::ImageError) -> Error + '_ {
    move |source| Error::Encode {
        path: path.to_path_buf(),
        source,
    }
}

impl RgbImage {
    /// Loads an image file (any format the `image` crate decodes) as RGB,
    /// values `v / 255`. Errors as [`load_rgb8`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_rgb8(&load_rgb8(path.as_ref())?)
    }

    /// Saves the image as 8-bit RGB ([`RgbImage::to_rgb8`]), in the format
    /// given by the file extension; [`Error::Encode`] names the file on
    /// failure.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.to_rgb8().save(path).map_err(encode_error(path))
    }
}

impl Plane {
    /// Loads a grey (or colour, converted to grey) image file as a binary
    /// mask, as [`Plane::mask_from_luma8`]. Errors as [`load_rgb8`].
    pub fn open_mask(path: impl AsRef<Path>) -> Result<Self> {
        Self::mask_from_luma8(&load_luma8(path.as_ref())?)
    }

    /// Saves the plane as an 8-bit grey image ([`Plane::to_luma8`]), in the
    /// format given by the file extension; [`Error::Encode`] names the file
    /// on failure.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.to_luma8().save(path).map_err(encode_error(path))
    }
}
