//! The CPU-side image and mask types, on `ndarray`:
//!
//! * [`RgbImage`]: an RGB image, `f32` values in `[0, 1]`, an
//!   [`ndarray::Array3`] of shape `(H, W, 3)` (HWC, the layout DRAEM's NumPy
//!   code uses before its final `transpose(2, 0, 1)`);
//! * [`Plane`]: a single-channel `f32` image, an [`ndarray::Array2`] of shape
//!   `(H, W)`: Perlin noise, anomaly maps, and masks ([`Mask`], values 0 or 1).
//!
//! Both always hold a non-empty array in standard (row-major, contiguous)
//! layout, so the hot loops of the crate work on plain slices
//! ([`RgbImage::as_hwc`], [`Plane::as_slice`]) while callers can use
//! `ndarray` views ([`RgbImage::view`], [`Plane::view`]).
//!
//! The submodules hold the rest of the image plumbing, each importing only
//! this module and the crate's error type:
//! * `convert`: to and from Candle tensors (`(3, H, W)`, `(N, 3, H, W)`,
//!   `(H, W)`, `(1, H, W)`, `(N, 1, H, W)`), CHW buffers and `image` crate
//!   buffers ([`images_to_tensor`], [`tensor_to_images`],
//!   [`planes_to_tensor`], [`tensor_to_planes`], and methods on the types);
//! * `io`: reading and writing image files, with errors naming the path
//!   ([`load_rgb8`], [`RgbImage::open`], [`RgbImage::save`],
//!   [`Plane::open_mask`], [`Plane::save`]).
//!
//! Geometry (rotation, resizing) lives in [`crate::geometry`].

use ndarray::{Array, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3};

use crate::error::{check_size, Error, Result};

mod convert;
mod io;

pub use convert::{images_to_tensor, planes_to_tensor, tensor_to_images, tensor_to_planes};
pub(crate) use convert::{stack_chw, stack_planes};
pub use io::{is_image_file, list_images, load_rgb8, IMAGE_EXTENSIONS};

/// An RGB image with `f32` values in `[0, 1]`: an `(H, W, 3)` array (HWC),
/// element `[[y, x, c]]`, stored row-major (`as_hwc()[(y * W + x) * 3 + c]`).
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pixels: Array3<f32>,
}

/// A single-channel `f32` image: an `(H, W)` array, stored row-major
/// (`as_slice()[y * W + x]`). Perlin noise, anomaly maps and masks.
#[derive(Clone, Debug, PartialEq)]
pub struct Plane {
    values: Array2<f32>,
}

/// An anomaly or foreground mask: a [`Plane`] whose values are 0 or 1.
pub type Mask = Plane;

/// The elements of an array in standard layout, row-major.
///
/// Every array held by [`RgbImage`] and [`Plane`] is built by
/// `Array::from_shape_vec` (or `zeros`), which gives standard layout, and a
/// view cannot change the layout of its owner, so this cannot fail.
fn contiguous<D: ndarray::Dimension>(a: &Array<f32, D>) -> &[f32] {
    a.as_slice()
        .expect("image arrays are kept in standard layout")
}

/// Mutable [`contiguous`].
fn contiguous_mut<D: ndarray::Dimension>(a: &mut Array<f32, D>) -> &mut [f32] {
    a.as_slice_mut()
        .expect("image arrays are kept in standard layout")
}

/// The elements of `a` in logical (row-major) order, reusing its buffer when
/// it already holds exactly those elements in that order.
fn into_row_major<D: ndarray::Dimension>(a: Array<f32, D>) -> Vec<f32> {
    if a.is_standard_layout() {
        let len = a.len();
        let (mut data, offset) = a.into_raw_vec_and_offset();
        let offset = offset.unwrap_or(0);
        if offset == 0 && data.len() == len {
            data
        } else {
            // A standard-layout slice of a larger buffer: its elements are
            // the contiguous run starting at `offset`.
            data.truncate(offset + len);
            data.drain(..offset);
            data
        }
    } else {
        a.iter().copied().collect()
    }
}

impl RgbImage {
    /// Wraps an `(H, W, 3)` array (any memory layout; a non-standard one is
    /// copied into row-major order).
    ///
    /// Errors: [`Error::ArrayShape`] if the last axis is not 3,
    /// [`Error::ZeroSizedImage`] if `H` or `W` is 0.
    pub fn from_array(pixels: Array3<f32>) -> Result<Self> {
        let (height, width, channels) = pixels.dim();
        if channels != 3 {
            return Err(Error::ArrayShape {
                expected: "(H, W, 3)",
                found: pixels.shape().to_vec(),
            });
        }
        check_size(height, width)?;
        Self::from_hwc(height, width, into_row_major(pixels))
    }

    /// Wraps an HWC buffer of `height * width * 3` values.
    ///
    /// Errors on a zero size or a buffer of the wrong length. Values are not
    /// clamped; use [`RgbImage::clamped`] when the source may leave `[0, 1]`.
    pub fn from_hwc(height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        check_size(height, width)?;
        let expected = height * width * 3;
        if data.len() != expected {
            return Err(Error::BufferLength {
                shape: vec![height, width, 3],
                expected,
                found: data.len(),
            });
        }
        let pixels =
            Array3::from_shape_vec((height, width, 3), data).map_err(|_| Error::ArrayShape {
                expected: "(H, W, 3)",
                found: vec![height, width, 3],
            })?;
        Ok(Self { pixels })
    }

    /// A constant-colour image.
    pub fn filled(height: usize, width: usize, rgb: [f32; 3]) -> Result<Self> {
        check_size(height, width)?;
        let data = rgb
            .iter()
            .copied()
            .cycle()
            .take(height * width * 3)
            .collect();
        Self::from_hwc(height, width, data)
    }

    /// A black image.
    pub fn zeros(height: usize, width: usize) -> Result<Self> {
        check_size(height, width)?;
        Ok(Self::zeros_unchecked(height, width))
    }

    /// A black image of a size already checked to be non-zero.
    pub(crate) fn zeros_unchecked(height: usize, width: usize) -> Self {
        Self {
            pixels: Array3::zeros((height, width, 3)),
        }
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.pixels.dim().0
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.pixels.dim().1
    }

    /// The `(H, W, 3)` array, read-only.
    pub fn view(&self) -> ArrayView3<'_, f32> {
        self.pixels.view()
    }

    /// The `(H, W, 3)` array, mutable (values only; the size is fixed).
    pub fn view_mut(&mut self) -> ArrayViewMut3<'_, f32> {
        self.pixels.view_mut()
    }

    /// Consumes the image, returning its `(H, W, 3)` array (standard layout).
    pub fn into_array(self) -> Array3<f32> {
        self.pixels
    }

    /// The HWC values.
    pub fn as_hwc(&self) -> &[f32] {
        contiguous(&self.pixels)
    }

    /// The HWC values, mutable.
    pub fn as_hwc_mut(&mut self) -> &mut [f32] {
        contiguous_mut(&mut self.pixels)
    }

    /// Consumes the image, returning its HWC buffer.
    pub fn into_hwc(self) -> Vec<f32> {
        into_row_major(self.pixels)
    }

    /// A copy with every value clamped to `[0, 1]`.
    pub fn clamped(&self) -> Self {
        Self {
            pixels: self.pixels.mapv(|v| v.clamp(0.0, 1.0)),
        }
    }

    /// Errors with [`Error::NonFinite`] if any value is NaN or infinite.
    pub fn check_finite(&self) -> Result<()> {
        if self.as_hwc().iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(Error::NonFinite("image pixels"))
        }
    }
}

impl Plane {
    /// Wraps an `(H, W)` array (any memory layout; a non-standard one is
    /// copied into row-major order). Errors with [`Error::ZeroSizedImage`] if
    /// `H` or `W` is 0.
    pub fn from_array(values: Array2<f32>) -> Result<Self> {
        let (height, width) = values.dim();
        check_size(height, width)?;
        Self::from_vec(height, width, into_row_major(values))
    }

    /// Wraps a row-major buffer of `height * width` values.
    pub fn from_vec(height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        check_size(height, width)?;
        if data.len() != height * width {
            return Err(Error::BufferLength {
                shape: vec![height, width],
                expected: height * width,
                found: data.len(),
            });
        }
        let values =
            Array2::from_shape_vec((height, width), data).map_err(|_| Error::ArrayShape {
                expected: "(H, W)",
                found: vec![height, width],
            })?;
        Ok(Self { values })
    }

    /// Like [`Plane::from_vec`], but also errors with
    /// [`Error::NonFinitePixel`] (naming the first such pixel) if a value is
    /// NaN or infinite; for anomaly maps, which must be finite to be scored.
    pub fn finite(height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        let plane = Self::from_vec(height, width, data)?;
        plane.check_finite_pixels()?;
        Ok(plane)
    }

    /// A constant plane.
    pub fn filled(height: usize, width: usize, value: f32) -> Result<Self> {
        Self::from_vec(height, width, vec![value; height * width])
    }

    /// A plane of zeros (an empty mask).
    pub fn zeros(height: usize, width: usize) -> Result<Self> {
        Self::filled(height, width, 0.0)
    }

    /// A plane of zeros of a size already checked to be non-zero.
    pub(crate) fn zeros_unchecked(height: usize, width: usize) -> Self {
        Self {
            values: Array2::zeros((height, width)),
        }
    }

    /// A mask from row-major flags: `true` gives 1, `false` gives 0.
    pub fn from_bool(height: usize, width: usize, flags: &[bool]) -> Result<Self> {
        let data = flags.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
        Self::from_vec(height, width, data)
    }

    /// The binary mask `[v > 0.5]` (a 0/1 [`Mask`] gives back its flags).
    pub fn to_bool(&self) -> Array2<bool> {
        self.threshold(0.5)
    }

    /// `[v > threshold]` per pixel (NaN gives `false`).
    pub fn threshold(&self, threshold: f32) -> Array2<bool> {
        self.values.mapv(|v| v > threshold)
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.values.dim().0
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.values.dim().1
    }

    /// The `(H, W)` array, read-only.
    pub fn view(&self) -> ArrayView2<'_, f32> {
        self.values.view()
    }

    /// The `(H, W)` array, mutable (values only; the size is fixed).
    pub fn view_mut(&mut self) -> ArrayViewMut2<'_, f32> {
        self.values.view_mut()
    }

    /// Consumes the plane, returning its `(H, W)` array (standard layout).
    pub fn into_array(self) -> Array2<f32> {
        self.values
    }

    /// The row-major values.
    pub fn as_slice(&self) -> &[f32] {
        contiguous(&self.values)
    }

    /// The row-major values, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        contiguous_mut(&mut self.values)
    }

    /// Consumes the plane, returning its buffer.
    pub fn into_vec(self) -> Vec<f32> {
        into_row_major(self.values)
    }

    /// Sum of all values (the number of anomalous pixels for a mask).
    pub fn sum(&self) -> f64 {
        self.as_slice().iter().map(|&v| f64::from(v)).sum()
    }

    /// Largest value (NaN values are ignored; `-inf` if all are NaN).
    pub fn max(&self) -> f32 {
        self.as_slice()
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// Fraction of pixels whose value exceeds 0.5 (mask coverage).
    pub fn coverage(&self) -> f64 {
        let data = self.as_slice();
        let on = data.iter().filter(|&&v| v > 0.5).count();
        on as f64 / data.len() as f64
    }

    /// Errors with [`Error::NonFinitePixel`], naming the first pixel in
    /// row-major order, if any value is NaN or infinite.
    pub fn check_finite_pixels(&self) -> Result<()> {
        let width = self.width();
        match self.as_slice().iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(i) => Err(Error::NonFinitePixel {
                value: self.as_slice()[i],
                y: i / width,
                x: i % width,
            }),
        }
    }
}
