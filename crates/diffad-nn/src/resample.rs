//! Up- and down-sampling of `(B, C, H, W)` maps whose gradients are correct.
//!
//! * [`upsample_nearest2x`]: nearest-neighbour x2 built from `reshape` and `broadcast_as`,
//!   so its backward sums the four copies and *accumulates* into the input's gradient.
//!   (Candle's `upsample_nearest2d` backward overwrites the gradient when its input also
//!   feeds another op, such as a skip connection.)
//! * [`upsample_bilinear2d`]: bilinear resize with `align_corners = True` (DRAEM's decoder,
//!   PyTorch `nn.Upsample(mode="bilinear", align_corners=True)`), computed exactly as
//!   `A_h · x · A_wᵀ` with interpolation matrices, so the backward is two matmuls.
//!   (Candle's bilinear upsampling has no backward.)
//! * [`max_pool2d`] and [`avg_pool2d`] with kernel = stride (PyTorch's floor mode: trailing
//!   rows/columns that do not fill a window are dropped).
//!
//! On the CPU (`f32`/`f64`), the first three run as one-pass kernels with their backward
//! (`kernels::resample`: the plain-op versions above copy a six-dimensional
//! broadcast or multiply by mostly-zero matrices, and their backward passes are strided
//! reductions); the plain ops remain the device-generic path and compute the same values
//! and gradients.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Whether the CPU kernels of `kernels::resample` run for `x` (`f32`/`f64` on the
/// CPU, unless the device-generic path is forced).
fn kernel_applies(x: &Tensor) -> bool {
    crate::runtime::cpu_kernels(x.device()) && matches!(x.dtype(), DType::F32 | DType::F64)
}

fn dims4(layer: &'static str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match *x.dims() {
        [b, c, h, w] => Ok((b, c, h, w)),
        _ => Err(Error::shape(layer, "(B, C, H, W)", x.dims())),
    }
}

/// Nearest-neighbour upsampling by 2 in both directions: `y[.., i, j] = x[.., i/2, j/2]`
/// (PyTorch `F.interpolate(x, scale_factor=2.0, mode="nearest")`, as diffusers'
/// `Upsample2D`).
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = dims4("upsample_nearest2x", x)?;
    if kernel_applies(x) {
        return Ok(crate::kernels::resample::upsample_nearest2x(x)?);
    }
    Ok(x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))?)
}

/// The `(out, inp)` matrix of 1-D linear interpolation with `align_corners = True`:
/// output `i` samples input position `i · (inp - 1) / (out - 1)` (position 0 when
/// `out == 1`).
pub fn interpolation_matrix_align_corners(
    inp: usize,
    out: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if inp == 0 || out == 0 {
        return Err(Error::config(
            "interpolation_matrix_align_corners",
            format!("sizes must be positive, got {inp} -> {out}"),
        ));
    }
    let mut m = vec![0f64; out * inp];
    let scale = if out > 1 {
        (inp - 1) as f64 / (out - 1) as f64
    } else {
        0.0
    };
    for i in 0..out {
        let src = i as f64 * scale;
        let lo = (src.floor() as usize).min(inp - 1);
        let hi = (lo + 1).min(inp - 1);
        let frac = src - lo as f64;
        m[i * inp + lo] += 1.0 - frac;
        m[i * inp + hi] += frac;
    }
    Ok(Tensor::from_vec(m, (out, inp), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// Bilinear resize of `x` `(B, C, H, W)` to `(B, C, out_h, out_w)` with
/// `align_corners = True`, as `A_h · x · A_wᵀ` (see the module doc).
pub fn upsample_bilinear2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (b, c, h, w) = dims4("upsample_bilinear2d", x)?;
    if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
        return Err(Error::shape(
            "upsample_bilinear2d",
            format!("a non-empty map resized to a non-empty {out_h}x{out_w}"),
            x.dims(),
        ));
    }
    if kernel_applies(x) {
        return Ok(crate::kernels::resample::upsample_bilinear2d(
            x, out_h, out_w,
        )?);
    }
    let a_w_t = interpolation_matrix_align_corners(w, out_w, x.dtype(), x.device())?.t()?;
    let a_h = interpolation_matrix_align_corners(h, out_h, x.dtype(), x.device())?;
    // Rows: (B·C·H, W) · (W, out_w).
    let y = x.reshape((b * c * h, w))?.matmul(&a_w_t.contiguous()?)?;
    // Columns: (B·C, H, out_w) -> (out_h, H) · (H, out_w) per map.
    let y = y.reshape((b * c, h, out_w))?;
    // The broadcast matrix has batch stride 0, which the CPU matmul reads as is (no copy).
    let y = a_h
        .unsqueeze(0)?
        .broadcast_as((b * c, out_h, h))?
        .matmul(&y)?;
    Ok(y.reshape((b, c, out_h, out_w))?)
}

fn pool_crop(layer: &'static str, x: &Tensor, k: usize) -> Result<(Tensor, [usize; 4])> {
    let (b, c, h, w) = dims4(layer, x)?;
    if k == 0 || h < k || w < k {
        return Err(Error::shape(
            layer,
            format!("(B, C, H, W) with H, W >= kernel {k} > 0"),
            x.dims(),
        ));
    }
    let (oh, ow) = (h / k, w / k);
    let x = if oh * k != h || ow * k != w {
        x.narrow(2, 0, oh * k)?.narrow(3, 0, ow * k)?
    } else {
        x.clone()
    };
    Ok((x, [b, c, oh, ow]))
}

/// Max pooling with a `k x k` kernel and stride `k` (PyTorch `F.max_pool2d(x, k)`), built
/// from `reshape` + `max`; the gradient goes to the maximum of each window (to every
/// maximum when several are equal).
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if kernel_applies(x) {
        // Checks the sizes (the kernel crops as `pool_crop` does).
        pool_crop("max_pool2d", x, k)?;
        return Ok(crate::kernels::resample::max_pool2d(x, k)?);
    }
    let (x, [b, c, oh, ow]) = pool_crop("max_pool2d", x, k)?;
    Ok(x.contiguous()?
        .reshape((b, c, oh, k, ow, k))?
        .max(5)?
        .max(3)?)
}

/// Average pooling with a `k x k` kernel and stride `k` (PyTorch `F.avg_pool2d(x, k)`), built
/// from `reshape` + `mean`.
pub fn avg_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    let (x, [b, c, oh, ow]) = pool_crop("avg_pool2d", x, k)?;
    Ok(x.contiguous()?
        .reshape((b, c, oh, k, ow, k))?
        .mean(5)?
        .mean(3)?)
}
