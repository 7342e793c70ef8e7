//! Conversions of [`RgbImage`] and [`Plane`] to and from CHW buffers,
//! Candle tensors (single images and batches) and `image` crate buffers,
//! written once for the whole workspace.

use candle_core::{DType, Device, Tensor};
use ndarray::{Array3, ArrayView3};
use rayon::prelude::*;

use super::{Plane, RgbImage};
use crate::error::{check_size, Error, Result};

/// `round(clamp(v, 0, 1) * 255)` with NaN mapped to 0.
#[inline]
fn unit_to_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        // Round half up (equal to `round` for non-negative values), inlined.
        (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
    }
}

impl RgbImage {
    /// Builds an image from a CHW buffer (`data[c * H * W + y * W + x]`),
    /// the layout of a `(3, H, W)` tensor.
    pub fn from_chw(height: usize, width: usize, chw: &[f32]) -> Result<Self> {
        check_size(height, width)?;
        let plane = height * width;
        if chw.len() != plane * 3 {
            return Err(Error::BufferLength {
                shape: vec![3, height, width],
                expected: plane * 3,
                found: chw.len(),
            });
        }
        let mut data = vec![0.0; plane * 3];
        for (p, px) in data.chunks_exact_mut(3).enumerate() {
            for (c, v) in px.iter_mut().enumerate() {
                *v = chw[c * plane + p];
            }
        }
        Self::from_hwc(height, width, data)
    }

    /// Builds an image from a `(3, H, W)` array (any memory layout).
    pub fn from_chw_array(chw: ArrayView3<'_, f32>) -> Result<Self> {
        let (channels, height, width) = chw.dim();
        if channels != 3 {
            return Err(Error::ArrayShape {
                expected: "(3, H, W)",
                found: chw.shape().to_vec(),
            });
        }
        check_size(height, width)?;
        let hwc = chw.permuted_axes([1, 2, 0]);
        Self::from_hwc(height, width, hwc.iter().copied().collect())
    }

    /// The values in CHW order (the layout of a `(3, H, W)` tensor).
    pub fn to_chw(&self) -> Vec<f32> {
        let plane = self.height() * self.width();
        let mut out = vec![0.0; plane * 3];
        self.write_chw(&mut out);
        out
    }

    /// The values as a `(3, H, W)` array (element `[[c, y, x]]`).
    pub fn to_chw_array(&self) -> Array3<f32> {
        self.view()
            .permuted_axes([2, 0, 1])
            .as_standard_layout()
            .into_owned()
    }

    /// Writes the CHW values into `out` (length `3 * H * W`).
    pub(crate) fn write_chw(&self, out: &mut [f32]) {
        let plane = self.height() * self.width();
        for (p, px) in self.as_hwc().chunks_exact(3).enumerate() {
            out[p] = px[0];
            out[plane + p] = px[1];
            out[2 * plane + p] = px[2];
        }
    }

    /// Converts an 8-bit image: `v / 255`.
    pub fn from_rgb8(img: &::image::RgbImage) -> Result<Self> {
        let (w, h) = img.dimensions();
        let data = img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
        Self::from_hwc(h as usize, w as usize, data)
    }

    /// Converts to 8 bits: `round(clamp(v, 0, 1) * 255)` (NaN maps to 0).
    pub fn to_rgb8(&self) -> ::image::RgbImage {
        let (h, w) = (self.height() as u32, self.width() as u32);
        let raw = self.as_hwc().iter().map(|&v| unit_to_u8(v)).collect();
        // Length is height * width * 3 by construction, so this cannot fail.
        ::image::RgbImage::from_raw(w, h, raw).unwrap_or_else(|| ::image::RgbImage::new(w, h))
    }

    /// A `(3, H, W)` `f32` tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.to_chw(),
            (3, self.height(), self.width()),
            device,
        )?)
    }

    /// Reads a `(3, H, W)` tensor (any float dtype, any device).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let dims = t.dims();
        if dims.len() != 3 || dims[0] != 3 {
            return Err(Error::TensorShape(format!(
                "expected (3, H, W), got {dims:?}"
            )));
        }
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::from_chw(dims[1], dims[2], &data)
    }
}

/// Checks that `n` items share the size of item 0 (`size(i)` is
/// `(height, width)`); errors with [`Error::EmptyBatch`] or
/// [`Error::SizeMismatch`] naming the first item that differs.
fn common_size(n: usize, size: impl Fn(usize) -> (usize, usize)) -> Result<(usize, usize)> {
    if n == 0 {
        return Err(Error::EmptyBatch);
    }
    let first = size(0);
    for index in 1..n {
        let found = size(index);
        if found != first {
            return Err(Error::SizeMismatch {
                index,
                expected_height: first.0,
                expected_width: first.1,
                found_height: found.0,
                found_width: found.1,
            });
        }
    }
    Ok(first)
}

/// The CHW values of `n` images of size `h x w` (`image(i)` is item `i`)
/// stacked into one `(n, 3, h, w)` buffer, written in parallel. Sizes must
/// have been checked.
pub(crate) fn stack_chw<'a>(
    n: usize,
    h: usize,
    w: usize,
    image: impl Fn(usize) -> &'a RgbImage + Sync,
) -> Vec<f32> {
    let plane = h * w;
    let mut out = vec![0.0f32; n * 3 * plane];
    out.par_chunks_mut(3 * plane)
        .enumerate()
        .for_each(|(i, chunk)| image(i).write_chw(chunk));
    out
}

/// The values of `n` planes of size `h x w` stacked into one `(n, h, w)`
/// buffer, copied in parallel. Sizes must have been checked.
pub(crate) fn stack_planes<'a>(
    n: usize,
    h: usize,
    w: usize,
    plane: impl Fn(usize) -> &'a Plane + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0f32; n * h * w];
    out.par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(i, chunk)| chunk.copy_from_slice(plane(i).as_slice()));
    out
}

/// Stacks images of one size into a `(N, 3, H, W)` `f32` tensor on `device`.
///
/// Errors: [`Error::EmptyBatch`] for no image, [`Error::SizeMismatch`]
/// naming the first image whose size differs from the first one's.
pub fn images_to_tensor(images: &[RgbImage], device: &Device) -> Result<Tensor> {
    let (h, w) = common_size(images.len(), |i| (images[i].height(), images[i].width()))?;
    let data = stack_chw(images.len(), h, w, |i| &images[i]);
    Ok(Tensor::from_vec(data, (images.len(), 3, h, w), device)?)
}

/// Splits a `(N, 3, H, W)` tensor (any float dtype, any device) into images.
pub fn tensor_to_images(batch: &Tensor) -> Result<Vec<RgbImage>> {
    let dims = batch.dims();
    if dims.len() != 4 || dims[1] != 3 {
        return Err(Error::TensorShape(format!(
            "expected (N, 3, H, W), got {dims:?}"
        )));
    }
    let (h, w) = (dims[2], dims[3]);
    check_size(h, w)?;
    let data = batch
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    data.chunks_exact(3 * h * w)
        .map(|chw| RgbImage::from_chw(h, w, chw))
        .collect()
}

impl Plane {
    /// Reads an 8-bit grey image as a binary mask: `v > 127` gives 1 (MVTec
    /// masks are 0/255).
    pub fn mask_from_luma8(img: &::image::GrayImage) -> Result<Self> {
        let (w, h) = img.dimensions();
        let data = img
            .as_raw()
            .iter()
            .map(|&v| if v > 127 { 1.0 } else { 0.0 })
            .collect();
        Self::from_vec(h as usize, w as usize, data)
    }

    /// Converts an 8-bit grey image: `v / 255` (no threshold; see
    /// [`Plane::mask_from_luma8`] and [`Plane::threshold`]).
    pub fn from_luma8(img: &::image::GrayImage) -> Result<Self> {
        let (w, h) = img.dimensions();
        let data = img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
        Self::from_vec(h as usize, w as usize, data)
    }

    /// Converts to 8 bits: `round(clamp(v, 0, 1) * 255)` (NaN maps to 0).
    pub fn to_luma8(&self) -> ::image::GrayImage {
        let (h, w) = (self.height() as u32, self.width() as u32);
        let raw = self.as_slice().iter().map(|&v| unit_to_u8(v)).collect();
        ::image::GrayImage::from_raw(w, h, raw).unwrap_or_else(|| ::image::GrayImage::new(w, h))
    }

    /// A `(1, H, W)` `f32` tensor on `device` (one channel, as a mask in a
    /// batch).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            self.as_slice(),
            (1, self.height(), self.width()),
            device,
        )?)
    }

    /// A `(H, W)` `f32` tensor on `device`.
    pub fn to_tensor_hw(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            self.as_slice(),
            (self.height(), self.width()),
            device,
        )?)
    }

    /// Reads a `(H, W)` or `(1, H, W)` tensor (any float dtype, any device).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (h, w) = match t.dims() {
            &[h, w] | &[1, h, w] => (h, w),
            dims => {
                return Err(Error::TensorShape(format!(
                    "expected (H, W) or (1, H, W), got {dims:?}"
                )))
            }
        };
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::from_vec(h, w, data)
    }
}

/// Stacks planes of one size into a `(N, 1, H, W)` `f32` tensor on `device`
/// (the layout of a batch of masks). Errors as [`images_to_tensor`].
pub fn planes_to_tensor(planes: &[Plane], device: &Device) -> Result<Tensor> {
    let (h, w) = common_size(planes.len(), |i| (planes[i].height(), planes[i].width()))?;
    let data = stack_planes(planes.len(), h, w, |i| &planes[i]);
    Ok(Tensor::from_vec(data, (planes.len(), 1, h, w), device)?)
}

/// Splits a `(N, 1, H, W)` or `(N, H, W)` tensor (any float dtype, any
/// device) into planes.
pub fn tensor_to_planes(batch: &Tensor) -> Result<Vec<Plane>> {
    let (h, w) = match batch.dims() {
        &[_, 1, h, w] | &[_, h, w] => (h, w),
        dims => {
            return Err(Error::TensorShape(format!(
                "expected (N, 1, H, W) or (N, H, W), got {dims:?}"
            )))
        }
    };
    check_size(h, w)?;
    let data = batch
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    data.chunks_exact(h * w)
        .map(|p| Plane::from_vec(h, w, p.to_vec()))
        .collect()
}
