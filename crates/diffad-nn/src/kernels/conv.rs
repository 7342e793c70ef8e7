//! The convolution kernel behind the `Conv2d` layer.
//!
//! On the CPU, for `f32`/`f64` and one group, the convolution (bias included) is a Candle
//! custom op (`Conv2dOp`) on raw slices whose
//!
//! * forward, per sample and band of output rows (at most [`COLS_BUDGET`] unfolded
//!   values, so the columns stay in cache), unfolds the input (`im2col_band`) and runs one
//!   gemm writing straight into the bias-filled output; 1x1 convolutions skip the
//!   unfolding, and 3x3 stride-1 convolutions with 128 channels or more use Winograd
//!   `F(2x2, 3x3)` ([`crate::kernels::winograd`]);
//! * backward (`Conv2dGrads`) computes `dWᵀ = Σ cols · gyᵀ` over chunks of samples, `db` as
//!   row sums, and `dx` as the convolution of `gy` with the flipped, transposed weight
//!   (stride 1) or `col2im(Wᵀ · gy)` (otherwise), never Candle's `conv_transpose2d`, a
//!   naive loop that dominates training time on the CPU.
//!
//! The gemms go through [`crate::kernels::gemm`] (the `gemm` crate's AVX-512 kernels
//! through its `x86-v4` feature, chosen at run time). Nothing is kept for the backward pass
//! but the input and the weight.
//!
//! Every other case (CUDA, half precision, grouped convolutions, or the CPU with
//! `runtime::set_generic_ops(true)`) uses Candle's `conv2d` plus a broadcast bias, with a
//! workaround for its backward's shape bug (see [`candle_conv2d`]).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::kernels::direct;
use crate::kernels::gemm::{gemm, Mat};
use crate::kernels::util::with_slices;
use crate::kernels::winograd;

/// Most elements of unfolded columns materialised at once (2 Mi values, 8 MB in `f32`):
/// the columns of a band of output rows are built, multiplied and dropped while they are
/// still in cache.
#[cfg(not(test))]
const COLS_BUDGET: usize = 1 << 21;
/// The unit tests unfold one output row at a time, so that the banded path is exercised.
#[cfg(test)]
const COLS_BUDGET: usize = 1;

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    padding: usize,
    stride: usize,
    dilation: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(
        (c, h, w): (usize, usize, usize),
        (kh, kw): (usize, usize),
        padding: usize,
        stride: usize,
        dilation: usize,
    ) -> candle_core::Result<Self> {
        let span_h = dilation * (kh - 1) + 1;
        let span_w = dilation * (kw - 1) + 1;
        if h + 2 * padding < span_h || w + 2 * padding < span_w || stride == 0 {
            candle_core::bail!("conv2d: input {h}x{w} (padding {padding}) smaller than kernel span {span_h}x{span_w}")
        }
        Ok(Self {
            c,
            h,
            w,
            kh,
            kw,
            padding,
            stride,
            dilation,
            ho: (h + 2 * padding - span_h) / stride + 1,
            wo: (w + 2 * padding - span_w) / stride + 1,
        })
    }

    /// Rows of the column matrix, `C·kh·kw`.
    fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions, `Ho·Wo`.
    fn l(&self) -> usize {
        self.ho * self.wo
    }

    /// Range of output columns `j` whose input column `j·s + v·d - p` lies in `[0, W)`.
    fn valid_j(&self, v: usize) -> (usize, usize) {
        valid_range(
            v * self.dilation,
            self.padding,
            self.stride,
            self.w,
            self.wo,
        )
    }

    fn valid_i(&self, u: usize) -> (usize, usize) {
        valid_range(
            u * self.dilation,
            self.padding,
            self.stride,
            self.h,
            self.ho,
        )
    }

    /// How many output rows to unfold at once (a band), at least one.
    fn band(&self) -> usize {
        (COLS_BUDGET / (self.ckk() * self.wo).max(1)).clamp(1, self.ho.max(1))
    }

    /// Whether the column matrix of a sample is the sample itself (a 1x1, stride-1,
    /// unpadded convolution), so that no unfolding is needed.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// Whether this is a 3x3 convolution with stride 1 and padding 1 (same size out).
    fn is_same_3x3(&self) -> bool {
        (self.kh, self.kw, self.stride, self.dilation, self.padding) == (3, 3, 1, 1, 1)
    }

    /// Whether an `f32` convolution with this geometry to `c_out` channels runs on the
    /// direct kernels ([`direct`]) rather than Winograd or im2col.
    fn takes_direct(&self, c_out: usize) -> bool {
        self.is_same_3x3()
            && !winograd::applies(self.c, c_out, self.h, self.w)
            && direct::applies(self.c, c_out, self.h, self.w)
    }

    /// Whether the input gradient is itself a convolution of the output gradient with the
    /// flipped, transposed weight (stride 1, dilation 1, `p <= k - 1`).
    fn has_transposed_conv(&self) -> bool {
        self.stride == 1
            && self.dilation == 1
            && self.padding < self.kh.min(self.kw)
            && self.kh == self.kw
    }
}

/// `s` as `f32` values when `T` is `f32`.
fn as_f32<T: WithDType>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: `T` is `f32` (its dtype says so), so the cast is the identity.
    (T::DTYPE == DType::F32)
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

/// [`as_f32`] for a mutable slice.
fn as_f32_mut<T: WithDType>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    (T::DTYPE == DType::F32)
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

/// `{ o in [0, out) : 0 <= o·s + off - p < size }` as a half-open range.
fn valid_range(off: usize, p: usize, s: usize, size: usize, out: usize) -> (usize, usize) {
    let lo = if p > off { (p - off).div_ceil(s) } else { 0 };
    // o·s + off - p <= size - 1  <=>  o <= (size - 1 + p - off) / s
    let hi = if size + p > off {
        ((size - 1 + p - off) / s + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Unfolds output rows `i0..i1` of one sample `x` `(C, H, W)` (contiguous) into the first
/// `nc = (i1 - i0)·Wo` columns of `cols`, a `(C·kh·kw, ld)` row-major block:
/// `cols[(c, u, v), (i - i0)·Wo + j] = x[c, i·s + u·d - p, j·s + v·d - p]`, zero outside the
/// image. Every element of those columns is written. In parallel over the rows of `cols`
/// when `parallel`, else on the calling thread.
fn im2col_band<T: WithDType>(
    x: &[T],
    g: &Geometry,
    (i0, i1): (usize, usize),
    cols: &mut [T],
    ld: usize,
    parallel: bool,
) {
    let nc = (i1 - i0) * g.wo;
    let cols = &mut cols[..(g.ckk() - 1) * ld + nc];
    let row = |(r, dst): (usize, &mut [T])| im2col_row(x, g, (i0, i1), r, dst);
    if parallel {
        cols.par_chunks_mut(ld)
            .with_min_len(8)
            .enumerate()
            .for_each(row);
    } else {
        cols.chunks_mut(ld).enumerate().for_each(row);
    }
}

/// Row `r = (c, u, v)` of [`im2col_band`]'s columns, into `dst` (at least `(i1 - i0)·Wo`
/// long).
fn im2col_row<T: WithDType>(
    x: &[T],
    g: &Geometry,
    (i0, i1): (usize, usize),
    r: usize,
    dst: &mut [T],
) {
    let hw = g.h * g.w;
    let (ci, u, v) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
    let plane = &x[ci * hw..(ci + 1) * hw];
    let (vi0, vi1) = g.valid_i(u);
    let (j0, j1) = g.valid_j(v);
    for (i, drow) in (i0..i1).zip(dst.chunks_exact_mut(g.wo)) {
        if i < vi0 || i >= vi1 || j0 >= j1 {
            drow.fill(T::zero());
            continue;
        }
        drow[..j0].fill(T::zero());
        drow[j1..].fill(T::zero());
        let y = i * g.stride + u * g.dilation - g.padding;
        let src = &plane[y * g.w..(y + 1) * g.w];
        let x0 = j0 * g.stride + v * g.dilation - g.padding;
        if g.stride == 1 {
            drow[j0..j1].copy_from_slice(&src[x0..x0 + (j1 - j0)]);
        } else {
            for (k, d) in drow[j0..j1].iter_mut().enumerate() {
                *d = src[x0 + k * g.stride];
            }
        }
    }
}

/// Adds the first `(i1 - i0)·Wo` columns of `cols` `(C·kh·kw, ld)`, the columns of output
/// rows `i0..i1`, back into one sample `dx` `(C, H, W)`, summing
/// overlaps (the adjoint of [`im2col_band`]). In parallel over channels, which own
/// disjoint planes, when `parallel`.
fn col2im_band<T: WithDType>(
    cols: &[T],
    ld: usize,
    g: &Geometry,
    rows: (usize, usize),
    dx: &mut [T],
    parallel: bool,
) {
    let plane = |(ci, plane): (usize, &mut [T])| col2im_plane(cols, ld, g, rows, ci, plane);
    if parallel {
        dx.par_chunks_mut(g.h * g.w).enumerate().for_each(plane);
    } else {
        dx.chunks_mut(g.h * g.w).enumerate().for_each(plane);
    }
}

/// Channel `ci` of [`col2im_band`], into its plane `(H, W)`.
fn col2im_plane<T: WithDType>(
    cols: &[T],
    ld: usize,
    g: &Geometry,
    (i0, i1): (usize, usize),
    ci: usize,
    plane: &mut [T],
) {
    let (nc, kk) = ((i1 - i0) * g.wo, g.kh * g.kw);
    for u in 0..g.kh {
        let (vi0, vi1) = g.valid_i(u);
        for v in 0..g.kw {
            let (j0, j1) = g.valid_j(v);
            if j0 >= j1 {
                continue;
            }
            let row = ci * kk + u * g.kw + v;
            let src = &cols[row * ld..row * ld + nc];
            for i in i0.max(vi0)..i1.min(vi1) {
                let y = i * g.stride + u * g.dilation - g.padding;
                let dst = &mut plane[y * g.w..(y + 1) * g.w];
                let x0 = j0 * g.stride + v * g.dilation - g.padding;
                let srow = &src[(i - i0) * g.wo + j0..(i - i0) * g.wo + j1];
                if g.stride == 1 {
                    for (d, s) in dst[x0..x0 + srow.len()].iter_mut().zip(srow) {
                        *d += *s;
                    }
                } else {
                    for (k, s) in srow.iter().enumerate() {
                        dst[x0 + k * g.stride] += *s;
                    }
                }
            }
        }
    }
}

/// Sets `y[o, off..off + n] = bias[o]` for every row `o` of `y` `(C_out, L)`.
fn fill_bias<T: WithDType>(y: &mut [T], l: usize, off: usize, n: usize, bias: &[T]) {
    y.par_chunks_mut(l)
        .zip(bias.par_iter())
        .for_each(|(row, b)| row[off..off + n].fill(*b));
}

/// Runs `f` on a scratch buffer of `len` elements, reused across calls on the same thread
/// (the column bands of the big convolutions are megabytes; allocating them afresh on every
/// call costs page faults). Its contents on entry are unspecified.
fn with_scratch<T: WithDType, R>(slot: usize, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static SCRATCH: [RefCell<Vec<f64>>; 3] = const {
            [RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new())]
        };
    }
    let words = (len * std::mem::size_of::<T>()).div_ceil(std::mem::size_of::<f64>());
    SCRATCH.with(|cells| match cells[slot].try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < words {
                *buf = vec![0.0; words];
            }
            // SAFETY: `T` is `f32` or `f64` (the only dtypes this module dispatches), whose
            // alignment is at most that of `f64`, and `words` f64s hold `len` values of `T`;
            // every bit pattern is a valid float.
            let slice =
                unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<T>(), len) };
            f(slice)
        }
        // Re-entered on this thread: fall back to a fresh buffer.
        Err(_) => f(&mut vec![T::zero(); len]),
    })
}

/// `y = conv(x, w) + bias` on raw contiguous slices: `x` `(B, C, H, W)`, `w`
/// `(C_out, C·kh·kw)`, `bias` `(C_out)`, giving `(B, C_out, Ho, Wo)`. Per sample and band of
/// output rows: unfold, then one gemm accumulating into the bias-filled output.
fn conv_forward<T: WithDType>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    c_out: usize,
    g: &Geometry,
) -> Vec<T> {
    let batch = x.len() / (g.c * g.h * g.w).max(1);
    // Every path writes every output element.
    let mut y = crate::kernels::util::uninit_vec(batch * c_out * g.l());
    conv_forward_into(x, w, bias, c_out, g, &mut y);
    y
}

/// [`conv_forward`] into `y` `(B, C_out, Ho, Wo)`.
fn conv_forward_into<T: WithDType>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    c_out: usize,
    g: &Geometry,
    y: &mut [T],
) {
    let (chw, l, ckk) = (g.c * g.h * g.w, g.l(), g.ckk());
    if l == 0 || c_out == 0 {
        return;
    }
    if chw == 0 {
        // No input channels: the output is the bias.
        for yo in y.chunks_mut(l) {
            yo.fill(T::zero());
        }
        if let Some(bias) = bias {
            for (k, yo) in y.chunks_mut(l).enumerate() {
                yo.fill(bias[k % c_out]);
            }
        }
        return;
    }
    let batch = x.len() / chw;
    let same_3x3 = g.is_same_3x3();
    if same_3x3 && winograd::applies(g.c, c_out, g.h, g.w) {
        winograd::conv3x3_into(x, w, bias, (g.c, g.h, g.w), c_out, y);
        return;
    }
    if let (Some(x), Some(w), Some(y)) = (as_f32(x), as_f32(w), as_f32_mut(y)) {
        if g.takes_direct(c_out) {
            direct::forward(x, w, bias.and_then(as_f32), (g.c, g.h, g.w), c_out, y);
            return;
        }
    }
    if tasks::applies(g, c_out, batch) {
        tasks::forward_into(x, w, bias, c_out, g, y);
        return;
    }
    let pointwise = g.is_pointwise();
    let band = if pointwise { g.ho } else { g.band() };
    let scratch = if pointwise { 0 } else { ckk * band * g.wo };
    with_scratch(0, scratch, |cols: &mut [T]| {
        for b in 0..batch {
            let xs = &x[b * chw..(b + 1) * chw];
            let ys = &mut y[b * c_out * l..(b + 1) * c_out * l];
            for i0 in (0..g.ho).step_by(band) {
                let i1 = (i0 + band).min(g.ho);
                let nc = (i1 - i0) * g.wo;
                let cols: &[T] = if pointwise {
                    xs
                } else {
                    im2col_band(xs, g, (i0, i1), cols, nc, true);
                    &cols[..ckk * nc]
                };
                if let Some(bias) = bias {
                    fill_bias(ys, l, i0 * g.wo, nc, bias);
                }
                // SAFETY: `w` is (C_out, CKK), `cols` is (CKK, nc), and the destination
                // block starts at output row i0 with row stride L, inside `ys`.
                unsafe {
                    gemm(
                        (c_out, nc, ckk),
                        &mut ys[i0 * g.wo..],
                        l,
                        bias.is_some(),
                        Mat::rows(w, 0, ckk),
                        Mat::rows(cols, 0, nc),
                    )
                };
            }
        }
    });
}

/// `dst (cols, rows) = srcᵀ` for `src` `(rows, cols)` at row stride `src_rs`, in tiles.
fn transpose_into<T: WithDType>(src: &[T], rows: usize, cols: usize, src_rs: usize, dst: &mut [T]) {
    const TILE: usize = 32;
    dst[..rows * cols]
        .par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(tj, block)| {
            let j0 = tj * TILE;
            let nj = block.len() / rows;
            for i0 in (0..rows).step_by(TILE) {
                for i in i0..(i0 + TILE).min(rows) {
                    let srow = &src[i * src_rs + j0..i * src_rs + j0 + nj];
                    for (dj, v) in srow.iter().enumerate() {
                        block[dj * rows + i] = *v;
                    }
                }
            }
        });
}

/// Most unfolded columns the backward pass builds at once (8 Mi values): the weight
/// gradient's gemm reduces over the columns, and gets faster the more it gets per call.
#[cfg(not(test))]
const BWD_COLS_BUDGET: usize = 1 << 23;
/// In the unit tests: one sample per chunk for small images, row bands for larger ones.
#[cfg(test)]
const BWD_COLS_BUDGET: usize = 3 * 3 * 3 * 36;

/// A piece of the batch the backward pass unfolds at once: several whole samples, or a band
/// of output rows of one sample.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// First sample and number of samples.
    samples: (usize, usize),
    /// Output rows (all of them for whole samples).
    rows: (usize, usize),
}

impl Chunk {
    /// Columns of the chunk: `samples · rows · Wo`.
    fn cols(&self, g: &Geometry) -> usize {
        self.samples.1 * (self.rows.1 - self.rows.0) * g.wo
    }
}

/// Splits a batch into [`Chunk`]s of at most [`BWD_COLS_BUDGET`] unfolded values (or one
/// output row), with bands of equal height.
fn backward_chunks(batch: usize, g: &Geometry) -> Vec<Chunk> {
    let per_sample = g.ckk() * g.l();
    if g.is_pointwise() || per_sample <= BWD_COLS_BUDGET {
        let n = if g.is_pointwise() {
            1
        } else {
            (BWD_COLS_BUDGET / per_sample.max(1)).clamp(1, batch.max(1))
        };
        return (0..batch)
            .step_by(n)
            .map(|b0| Chunk {
                samples: (b0, n.min(batch - b0)),
                rows: (0, g.ho),
            })
            .collect();
    }
    let max_rows = (BWD_COLS_BUDGET / (g.ckk() * g.wo).max(1)).max(1);
    let bands = g.ho.div_ceil(max_rows);
    let rows = g.ho.div_ceil(bands);
    (0..batch)
        .flat_map(|b| {
            (0..g.ho).step_by(rows).map(move |i0| Chunk {
                samples: (b, 1),
                rows: (i0, (i0 + rows).min(g.ho)),
            })
        })
        .collect()
}

/// The gradients of [`conv_forward`] into `dw` `(C_out, CKK)` and, when given, the zeroed
/// `dx`: `dW = Σ_b gy_b · cols_bᵀ`, `dx = col2im(Wᵀ · gy)`.
///
/// `dW` is accumulated transposed, `dWᵀ += cols · gyᵀ`, with the chunk of `gy` transposed
/// first (gemm is several times faster when its right-hand side is not read along the
/// reduction dimension), over chunks of several samples when the images are small.
fn conv_backward<T: WithDType>(
    x: &[T],
    w: &[T],
    gy: &[T],
    c_out: usize,
    g: &Geometry,
    dw: &mut [T],
    dx: Option<&mut [T]>,
) {
    let (chw, l, ckk) = (g.c * g.h * g.w, g.l(), g.ckk());
    let batch = x.len() / chw.max(1);
    if l == 0 || c_out == 0 || batch == 0 {
        dw.fill(T::zero());
        return;
    }
    if tasks::applies_backward(g, c_out, batch) {
        tasks::backward(x, w, gy, c_out, g, dw, dx);
        return;
    }
    let chunks = backward_chunks(batch, g);
    let max_cols = chunks.iter().map(|c| c.cols(g)).max().unwrap_or(0);
    let n_cols = if g.is_pointwise() { 0 } else { ckk * max_cols };
    let n_dcols = if dx.is_some() { n_cols } else { 0 };
    with_scratch(0, n_cols, |cols: &mut [T]| {
        with_scratch(1, n_dcols, |dcols: &mut [T]| {
            with_scratch(2, max_cols * c_out, |gy_t: &mut [T]| {
                let scratch = Scratch { cols, dcols, gy_t };
                backward_chunks_run(x, w, gy, c_out, g, &chunks, scratch, dw, dx)
            })
        })
    });
}

/// The scratch buffers of [`conv_backward`].
struct Scratch<'a, T> {
    cols: &'a mut [T],
    dcols: &'a mut [T],
    gy_t: &'a mut [T],
}

/// The chunk loop of [`conv_backward`].
#[allow(clippy::too_many_arguments)]
fn backward_chunks_run<T: WithDType>(
    x: &[T],
    w: &[T],
    gy: &[T],
    c_out: usize,
    g: &Geometry,
    chunks: &[Chunk],
    s: Scratch<'_, T>,
    dw: &mut [T],
    mut dx: Option<&mut [T]>,
) {
    let (chw, l, ckk) = (g.c * g.h * g.w, g.l(), g.ckk());
    let pointwise = g.is_pointwise();
    let mut dw_t = vec![T::zero(); ckk * c_out];
    for (ci, chunk) in chunks.iter().enumerate() {
        let (b0, n) = chunk.samples;
        let (i0, i1) = chunk.rows;
        let nl = (i1 - i0) * g.wo;
        let ld = chunk.cols(g);
        for (k, b) in (b0..b0 + n).enumerate() {
            if !pointwise {
                im2col_band(
                    &x[b * chw..(b + 1) * chw],
                    g,
                    (i0, i1),
                    &mut s.cols[k * nl..],
                    ld,
                    true,
                );
            }
            let gys = &gy[b * c_out * l + i0 * g.wo..];
            transpose_into(gys, c_out, nl, l, &mut s.gy_t[k * nl * c_out..]);
        }
        let cols: &[T] = if pointwise {
            &x[b0 * chw..(b0 + 1) * chw]
        } else {
            &s.cols[..ckk * ld]
        };
        // SAFETY: dWᵀ (CKK, C_out) += cols (CKK, ld) · gy_chunkᵀ (ld, C_out).
        unsafe {
            gemm(
                (ckk, c_out, ld),
                &mut dw_t,
                c_out,
                ci > 0,
                Mat::rows(cols, 0, ld),
                Mat::rows(s.gy_t, 0, c_out),
            )
        };
        let Some(dx) = dx.as_deref_mut() else {
            continue;
        };
        for (k, b) in (b0..b0 + n).enumerate() {
            let dxs = &mut dx[b * chw..(b + 1) * chw];
            // The output gradient of these rows of sample b: (C_out, nl) at row stride L.
            let gy_rows = Mat::rows(gy, b * c_out * l + i0 * g.wo, l);
            if pointwise {
                // SAFETY: dx_b (C, L) = Wᵀ (C, C_out) · gy_b (C_out, L).
                unsafe {
                    gemm(
                        (ckk, l, c_out),
                        dxs,
                        l,
                        false,
                        Mat::rows(w, 0, ckk).t(),
                        gy_rows,
                    )
                };
                continue;
            }
            let dcols = &mut s.dcols[k * nl..];
            // SAFETY: dcols (CKK, nl) at row stride ld = Wᵀ (CKK, C_out) · gy_rows (C_out, nl).
            unsafe {
                gemm(
                    (ckk, nl, c_out),
                    dcols,
                    ld,
                    false,
                    Mat::rows(w, 0, ckk).t(),
                    gy_rows,
                )
            };
            col2im_band(dcols, ld, g, (i0, i1), dxs, true);
        }
    }
    transpose_into(&dw_t, ckk, c_out, c_out, dw);
}

/// `w'[c, o, u, v] = w[o, c, k - 1 - u, k - 1 - v]`: the weight of the transposed
/// convolution, `(C, C_out·k·k)` from `(C_out, C·k·k)`.
fn flip_transpose<T: WithDType>(w: &[T], c_out: usize, c: usize, kk: usize) -> Vec<T> {
    let mut out = vec![T::zero(); w.len()];
    for o in 0..c_out {
        for ci in 0..c {
            let src = &w[(o * c + ci) * kk..(o * c + ci + 1) * kk];
            let dst = &mut out[(ci * c_out + o) * kk..(ci * c_out + o + 1) * kk];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    out
}

/// All gradients of the convolution, flattened into one vector `[dW, db, dx]`, with
/// `db[o] = Σ_{b, l} gy[b, o, l]`.
///
/// With stride 1, dilation 1 and `p <= k - 1`, the input gradient is the convolution of the
/// output gradient with the flipped, transposed weight and padding `k - 1 - p`, which runs
/// through the fast forward path; otherwise it is `col2im(Wᵀ · gy)`.
fn conv_grads<T: WithDType>(x: &[T], w: &[T], gy: &[T], c_out: usize, g: &Geometry) -> Vec<T> {
    let l = g.l();
    // dW, db and (on the transposed-convolution path) dx are written whole; the col2im
    // path accumulates into a zeroed dx.
    let mut out = crate::kernels::util::uninit_vec(w.len() + c_out + x.len());
    let (dw, rest) = out.split_at_mut(w.len());
    let (db, dx) = rest.split_at_mut(c_out);
    crate::kernels::util::par_chunks_mut(db, 1, gy.len(), |o, d| {
        d[0] = T::from_f64(
            gy.chunks_exact(c_out * l)
                .map(|gb| crate::kernels::util::sum(&gb[o * l..(o + 1) * l]))
                .sum(),
        );
    });
    if g.has_transposed_conv() && !g.is_pointwise() {
        match (as_f32(x), as_f32(gy), as_f32_mut(dw)) {
            (Some(x), Some(gy), Some(dw))
                if g.takes_direct(c_out) && direct::weight_grad_applies(g.c, c_out, g.w) =>
            {
                direct::weight_grad(x, gy, (g.c, g.h, g.w), c_out, dw);
            }
            _ => conv_backward(x, w, gy, c_out, g, dw, None),
        }
        let k = g.kh;
        let gt = Geometry {
            c: c_out,
            h: g.ho,
            w: g.wo,
            padding: k - 1 - g.padding,
            ho: g.h,
            wo: g.w,
            ..*g
        };
        let wt = flip_transpose(w, c_out, g.c, k * k);
        conv_forward_into(gy, &wt, None, g.c, &gt, dx);
    } else {
        dx.fill(T::zero());
        conv_backward(x, w, gy, c_out, g, dw, Some(dx));
    }
    out
}

/// The convolution as one differentiable custom op of `(x, weight)` or, with a bias,
/// `(x, weight, bias)` (see the module doc).
struct Conv2dOp(Geometry);

/// The gradients of [`Conv2dOp`] as a custom op of `(x, weight, grad_output)` without
/// backward, giving `[dW, db, dx]` flattened.
struct Conv2dGrads(Geometry);

impl Conv2dOp {
    fn out_shape(&self, x: &Layout, w: &Layout) -> Shape {
        Shape::from((x.dims()[0], w.dims()[0], self.0.ho, self.0.wo))
    }

    /// `(dx, dW, db)` through [`Conv2dGrads`].
    fn grads(
        &self,
        x: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let grads = x.detach().apply_op3_no_bwd(
            &weight.detach(),
            &grad.detach().contiguous()?,
            &Conv2dGrads(self.0),
        )?;
        let (nw, c_out) = (weight.elem_count(), weight.dim(0)?);
        let dw = grads.narrow(0, 0, nw)?.reshape(weight.shape())?;
        let db = grads.narrow(0, nw, c_out)?;
        let dx = grads
            .narrow(0, nw + c_out, x.elem_count())?
            .reshape(x.shape())?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "diffad-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let c_out = l2.dims()[0];
        let out = with_slices!(CustomOp2::name(self), [(s1, l1), (s2, l2)], |x, w| {
            conv_forward(x, w, None, c_out, &self.0)
        });
        Ok((out, self.out_shape(l1, l2)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, weight, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "diffad-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let c_out = l2.dims()[0];
        let out = with_slices!(
            CustomOp3::name(self),
            [(s1, l1), (s2, l2), (s3, l3)],
            |x, w, b| conv_forward(x, w, Some(b), c_out, &self.0)
        );
        Ok((out, self.out_shape(l1, l2)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, weight, grad)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for Conv2dGrads {
    fn name(&self) -> &'static str {
        "diffad-conv2d-grads"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let c_out = l2.dims()[0];
        let n = l1.shape().elem_count() + l2.shape().elem_count() + c_out;
        let out = with_slices!(self.name(), [(s1, l1), (s2, l2), (s3, l3)], |x, w, gy| {
            conv_grads(x, w, gy, c_out, &self.0)
        });
        Ok((out, Shape::from(n)))
    }
}

/// The convolutions whose weights are small (the tiny preset's networks, the first layers
/// of the paper's): one task per sample and band of output rows, each unfolding its
/// band into a per-thread buffer that stays in the core's L2 cache and multiplying it with
/// a single-threaded gemm.
///
/// The general path above splits every gemm across the threads instead, which pays when
/// the gemms are large; with a few dozen channels each gemm is a fraction of a millisecond,
/// and a band of a whole sample's columns (`9·C·H·W` values) no longer fits in cache.
mod tasks {
    use super::*;
    use crate::kernels::gemm::gemm_serial;
    use crate::kernels::util::{par_chunks_mut, par_for, threads, Shared};

    /// Most unfolded values one task builds (128 Ki values, 512 KB in `f32`).
    #[cfg(not(test))]
    const TASK_COLS: usize = 1 << 17;
    /// The unit tests unfold a few output rows per task.
    #[cfg(test)]
    const TASK_COLS: usize = 3 * 3 * 3 * 8;

    #[cfg(test)]
    thread_local! {
        /// Set by the tests to run the general path on this thread.
        pub(super) static GENERAL_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Largest weight (`C_out·C·kh·kw` values) whose convolution takes this path.
    const MAX_WEIGHTS: usize = 64 * 64 * 9;

    /// Output rows per task.
    fn rows(g: &Geometry) -> usize {
        (TASK_COLS / (g.ckk() * g.wo).max(1)).clamp(1, g.ho.max(1))
    }

    /// Whether the forward convolution takes this path: a small weight, and at least two
    /// tasks per thread.
    pub(super) fn applies(g: &Geometry, c_out: usize, batch: usize) -> bool {
        #[cfg(test)]
        if GENERAL_ONLY.with(|f| f.get()) {
            return false;
        }
        let tasks = batch * g.ho.div_ceil(rows(g));
        c_out * g.ckk() <= MAX_WEIGHTS && tasks >= 2 * threads()
    }

    /// Whether the weight gradient (and, for strided convolutions, the input gradient)
    /// takes this path: as [`applies`], with at least one sample per thread (the input
    /// gradient's tasks are whole samples, whose bands overlap in `dx`).
    pub(super) fn applies_backward(g: &Geometry, c_out: usize, batch: usize) -> bool {
        applies(g, c_out, batch) && batch >= threads()
    }

    /// The tasks `(sample, (i0, i1))` of a batch of `batch` samples.
    fn task(g: &Geometry, rows: usize, t: usize) -> (usize, (usize, usize)) {
        let bands = g.ho.div_ceil(rows);
        let (b, i0) = (t / bands, (t % bands) * rows);
        (b, (i0, (i0 + rows).min(g.ho)))
    }

    /// The columns of rows `i0..i1` of sample `xs` as a gemm operand `(CKK, nc)`: `xs`
    /// itself for a pointwise convolution, else unfolded into `cols`.
    fn columns<'a, T: WithDType>(
        xs: &'a [T],
        g: &Geometry,
        (i0, i1): (usize, usize),
        cols: &'a mut [T],
    ) -> Mat<T> {
        if g.is_pointwise() {
            Mat::rows(xs, i0 * g.w, g.l())
        } else {
            let nc = (i1 - i0) * g.wo;
            im2col_band(xs, g, (i0, i1), cols, nc, false);
            Mat::rows(cols, 0, nc)
        }
    }

    /// [`conv_forward_into`] by tasks.
    pub(super) fn forward_into<T: WithDType>(
        x: &[T],
        w: &[T],
        bias: Option<&[T]>,
        c_out: usize,
        g: &Geometry,
        y: &mut [T],
    ) {
        let (chw, l, ckk) = (g.c * g.h * g.w, g.l(), g.ckk());
        let batch = x.len() / chw;
        let rows = rows(g);
        let n_tasks = batch * g.ho.div_ceil(rows);
        let scratch = if g.is_pointwise() {
            0
        } else {
            ckk * rows * g.wo
        };
        let out = Shared(y.as_mut_ptr());
        par_for(n_tasks, batch * c_out * l * ckk, |t| {
            let (b, (i0, i1)) = task(g, rows, t);
            let nc = (i1 - i0) * g.wo;
            let dst = out.at(b * c_out * l + i0 * g.wo);
            if let Some(bias) = bias {
                for (o, &v) in bias.iter().enumerate() {
                    // SAFETY: row o of this task's block, inside `y`, written by this task only.
                    unsafe { std::slice::from_raw_parts_mut(dst.add(o * l), nc) }.fill(v);
                }
            }
            with_scratch(0, scratch, |cols: &mut [T]| {
                let rhs = columns(&x[b * chw..(b + 1) * chw], g, (i0, i1), cols);
                // SAFETY: W (C_out, CKK) · cols (CKK, nc) into the block of output rows
                // i0..i1 of sample b (row stride L), which no other task writes.
                unsafe {
                    gemm_serial(
                        (c_out, nc, ckk),
                        dst,
                        l,
                        bias.is_some(),
                        Mat::rows(w, 0, ckk),
                        rhs,
                    )
                }
            });
        });
    }

    /// `dst (cols, rows) = srcᵀ` for `src` `(rows, cols)` at row stride `src_rs`, on the
    /// calling thread.
    fn transpose_serial<T: WithDType>(
        src: &[T],
        rows: usize,
        cols: usize,
        src_rs: usize,
        dst: &mut [T],
    ) {
        const TILE: usize = 16;
        for i0 in (0..rows).step_by(TILE) {
            for j0 in (0..cols).step_by(TILE) {
                for i in i0..(i0 + TILE).min(rows) {
                    let srow = &src[i * src_rs + j0..i * src_rs + (j0 + TILE).min(cols)];
                    for (dj, v) in srow.iter().enumerate() {
                        dst[(j0 + dj) * rows + i] = *v;
                    }
                }
            }
        }
    }

    /// [`conv_backward`] by tasks: `dWᵀ` summed per thread over its share of the tasks
    /// (each `cols · gy_bandᵀ`, as the general path), then over the threads; `dx` (when
    /// given) one task per sample.
    pub(super) fn backward<T: WithDType>(
        x: &[T],
        w: &[T],
        gy: &[T],
        c_out: usize,
        g: &Geometry,
        dw: &mut [T],
        dx: Option<&mut [T]>,
    ) {
        let (chw, l, ckk) = (g.c * g.h * g.w, g.l(), g.ckk());
        let batch = x.len() / chw;
        let rows = rows(g);
        let n_tasks = batch * g.ho.div_ceil(rows);
        // Two groups of tasks per thread, each summing its own dWᵀ.
        let groups = (2 * threads()).clamp(1, n_tasks);
        let per_group = n_tasks.div_ceil(groups);
        let scratch = if g.is_pointwise() {
            0
        } else {
            ckk * rows * g.wo
        };
        let mut partials = vec![T::zero(); groups * ckk * c_out];
        par_chunks_mut(
            &mut partials,
            ckk * c_out,
            batch * c_out * l * ckk,
            |th, dw_t| {
                let mine = th * per_group..((th + 1) * per_group).min(n_tasks);
                with_scratch(0, scratch, |cols: &mut [T]| {
                    with_scratch(2, rows * g.wo * c_out, |gy_t: &mut [T]| {
                        for (k, t) in mine.enumerate() {
                            let (b, (i0, i1)) = task(g, rows, t);
                            let nl = (i1 - i0) * g.wo;
                            let lhs = columns(&x[b * chw..(b + 1) * chw], g, (i0, i1), cols);
                            let gys = &gy[b * c_out * l + i0 * g.wo..];
                            transpose_serial(gys, c_out, nl, l, gy_t);
                            // SAFETY: dWᵀ (CKK, C_out) += cols (CKK, nl) · gy_bandᵀ (nl, C_out).
                            unsafe {
                                gemm_serial(
                                    (ckk, c_out, nl),
                                    dw_t.as_mut_ptr(),
                                    c_out,
                                    k > 0,
                                    lhs,
                                    Mat::rows(gy_t, 0, c_out),
                                )
                            };
                        }
                    })
                });
            },
        );
        let mut dw_t = vec![T::zero(); ckk * c_out];
        for p in partials.chunks_exact(ckk * c_out) {
            for (d, v) in dw_t.iter_mut().zip(p) {
                *d += *v;
            }
        }
        transpose_into(&dw_t, ckk, c_out, c_out, dw);
        let Some(dx) = dx else {
            return;
        };
        par_chunks_mut(dx, chw, batch * c_out * l * ckk, |b, dxs| {
            if g.is_pointwise() {
                // SAFETY: dx_b (C, L) = Wᵀ (C, C_out) · gy_b (C_out, L).
                unsafe {
                    gemm_serial(
                        (ckk, l, c_out),
                        dxs.as_mut_ptr(),
                        l,
                        false,
                        Mat::rows(w, 0, ckk).t(),
                        Mat::rows(gy, b * c_out * l, l),
                    )
                };
                return;
            }
            dxs.fill(T::zero());
            with_scratch(1, ckk * rows * g.wo, |dcols: &mut [T]| {
                for i0 in (0..g.ho).step_by(rows) {
                    let i1 = (i0 + rows).min(g.ho);
                    let nl = (i1 - i0) * g.wo;
                    // SAFETY: dcols (CKK, nl) = Wᵀ (CKK, C_out) · gy_rows (C_out, nl).
                    unsafe {
                        gemm_serial(
                            (ckk, nl, c_out),
                            dcols.as_mut_ptr(),
                            nl,
                            false,
                            Mat::rows(w, 0, ckk).t(),
                            Mat::rows(gy, b * c_out * l + i0 * g.wo, l),
                        )
                    };
                    col2im_band(dcols, nl, g, (i0, i1), dxs, false);
                }
            });
        });
    }
}

/// Candle's `conv2d`, cropping the input first when its backward would fail.
///
/// Candle 0.11's conv2d backward derives the `output_padding` of its transposed
/// convolution from the height only and applies it to the width too, so the input gradient
/// has the wrong shape when `(H + 2p - span) % stride` differs from the same quantity for
/// the width. In that case the rows/columns that no window reads are removed first
/// (explicit zero padding, then a `narrow`, both of which differentiate), which makes both
/// remainders zero without changing the result.
pub(crate) fn candle_conv2d(
    x: &Tensor,
    weight: &Tensor,
    padding: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (_, _, kh, kw) = weight.dims4()?;
    let rem_h = (h + 2 * padding - dilation * (kh - 1) - 1) % stride;
    let rem_w = (w + 2 * padding - dilation * (kw - 1) - 1) % stride;
    if rem_h == rem_w {
        return x.conv2d(weight, padding, stride, dilation, groups);
    }
    let padded = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let (ph, pw) = (h + 2 * padding, w + 2 * padding);
    let cropped = padded.narrow(2, 0, ph - rem_h)?.narrow(3, 0, pw - rem_w)?;
    cropped.conv2d(weight, 0, stride, dilation, groups)
}

/// The im2col/gemm convolution (CPU, `f32`/`f64`, one group) with an optional bias `(C_out)`,
/// differentiable in all its inputs.
pub(crate) fn im2col_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let (_, c_in, kh, kw) = weight.dims4()?;
    if c != c_in {
        candle_core::bail!("conv2d: input has {c} channels, weight expects {c_in}")
    }
    let g = Geometry::new((c, h, w), (kh, kw), padding, stride, dilation)?;
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&weight, &b.contiguous()?, Conv2dOp(g)),
        None => x.apply_op2(&weight, Conv2dOp(g)),
    }
}

/// `conv2d` with PyTorch semantics (`nn.Conv2d`: padding, stride, dilation, groups) plus an optional bias `(C_out)`: the
/// im2col kernel where it applies (bias fused), Candle's otherwise.
pub(crate) fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
) -> candle_core::Result<Tensor> {
    let fast = crate::runtime::cpu_kernels(x.device())
        && groups == 1
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == weight.dtype()
        && bias.is_none_or(|b| b.dtype() == x.dtype());
    if fast {
        return im2col_conv2d(x, weight, bias, padding, stride, dilation);
    }
    if x.device().is_cpu() && matches!(x.dtype(), DType::BF16 | DType::F16) {
        // Candle's CPU convolution has no half-precision matrix product: widen to f32,
        // convolve, round the result back. That is what a GPU's half-precision
        // convolution computes too (half inputs and weights, f32 accumulation, a half
        // output), so the CPU tests see the rounding CUDA sees.
        let dtype = x.dtype();
        let widen = |t: &Tensor| t.to_dtype(DType::F32);
        let y = conv2d(
            &widen(x)?,
            &widen(weight)?,
            bias.map(widen).transpose()?.as_ref(),
            padding,
            stride,
            dilation,
            groups,
        )?;
        return y.to_dtype(dtype);
    }
    let y = candle_conv2d(x, weight, padding, stride, dilation, groups)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The im2col kernel equals Candle's conv2d, forward and both gradients, over a grid of
    /// geometries (odd sizes, strides, dilations, paddings larger than the kernel reach).
    #[test]
    fn matches_candle_conv_forward_and_backward() {
        let mut seed = 0;
        for (h, w) in [(7, 6), (5, 5), (1, 3), (9, 4)] {
            for (k, p, s, d) in [
                (3, 1, 1, 1),
                (3, 0, 1, 1),
                (3, 1, 2, 1),
                (3, 2, 2, 2),
                (1, 0, 1, 1),
                (1, 1, 3, 1),
                (2, 0, 2, 1),
                (3, 3, 1, 1),
            ] {
                let span = d * (k - 1) + 1;
                if h + 2 * p < span || w + 2 * p < span {
                    continue;
                }
                seed += 1;
                let x = candle_core::Var::from_tensor(&rand(&[2, 3, h, w], seed)).unwrap();
                let wt = candle_core::Var::from_tensor(&rand(&[4, 3, k, k], seed + 100)).unwrap();
                let bias = candle_core::Var::from_tensor(&rand(&[4], seed + 300)).unwrap();
                let ours = im2col_conv2d(&x, &wt, Some(&bias), p, s, d).unwrap();
                let theirs = candle_conv2d(&x, &wt, p, s, d, 1)
                    .unwrap()
                    .broadcast_add(&bias.reshape((1, 4, 1, 1)).unwrap())
                    .unwrap();
                assert_eq!(ours.dims(), theirs.dims());
                let r = rand(ours.dims(), seed + 200);
                let go = (ours.clone() * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gt = (theirs.clone() * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let diff = |a: &Tensor, b: &Tensor| crate::testing::max_abs_diff(a, b).unwrap();
                let what = format!("{h}x{w} k{k} p{p} s{s} d{d}");
                assert!(diff(&ours, &theirs) < 1e-12, "forward {what}");
                assert!(
                    diff(go.get(&wt).unwrap(), gt.get(&wt).unwrap()) < 1e-12,
                    "dW {what}"
                );
                assert!(
                    diff(go.get(&x).unwrap(), gt.get(&x).unwrap()) < 1e-12,
                    "dx {what}"
                );
                assert!(
                    diff(go.get(&bias).unwrap(), gt.get(&bias).unwrap()) < 1e-12,
                    "db {what}"
                );
                // Without a bias, through the two-input op.
                let plain = im2col_conv2d(&x, &wt, None, p, s, d).unwrap();
                let reference = candle_conv2d(&x, &wt, p, s, d, 1).unwrap();
                assert!(
                    diff(&plain, &reference) < 1e-12,
                    "forward without bias {what}"
                );
            }
        }
    }

    /// With 256 channels the forward and the input gradient go through Winograd; both,
    /// and the weight and bias gradients, still equal Candle's conv2d.
    #[test]
    fn winograd_path_matches_candle_conv() {
        let (c, h, w) = (256, 16, 15);
        assert!(winograd::applies(c, c, h, w));
        let x = candle_core::Var::from_tensor(&rand(&[1, c, h, w], 7)).unwrap();
        let wt = candle_core::Var::from_tensor(&(rand(&[c, c, 3, 3], 8) * 0.05).unwrap()).unwrap();
        let bias = candle_core::Var::from_tensor(&rand(&[c], 9)).unwrap();
        let ours = im2col_conv2d(&x, &wt, Some(&bias), 1, 1, 1).unwrap();
        let theirs = candle_conv2d(&x, &wt, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        let r = rand(ours.dims(), 10);
        let go = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = (&theirs * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let diff = |a: &Tensor, b: &Tensor| crate::testing::max_abs_diff(a, b).unwrap();
        assert!(diff(&ours, &theirs) < 1e-10, "forward");
        for (what, v) in [
            ("dx", x.as_tensor()),
            ("dW", wt.as_tensor()),
            ("db", bias.as_tensor()),
        ] {
            assert!(
                diff(go.get(v).unwrap(), gt.get(v).unwrap()) < 1e-9,
                "{what}"
            );
        }
    }

    /// The per-task path equals the general one: forward, `dW`, `db` and `dx`, for
    /// padded, strided, dilated and pointwise convolutions, one to three samples.
    #[test]
    fn task_path_matches_general_path() {
        let mut seed = 500;
        let mut used = 0;
        for batch in [1, 2, 3] {
            for (h, w) in [(7, 6), (12, 9)] {
                for (k, p, s, d) in [
                    (3, 1, 1, 1),
                    (3, 1, 2, 1),
                    (3, 2, 1, 2),
                    (1, 0, 1, 1),
                    (2, 0, 2, 1),
                ] {
                    seed += 1;
                    let (c, c_out) = (3, 5);
                    let x = rand(&[batch, c, h, w], seed);
                    let wt = rand(&[c_out, c, k, k], seed + 1);
                    let bias = rand(&[c_out], seed + 2);
                    let g = Geometry::new((c, h, w), (k, k), p, s, d).unwrap();
                    used += usize::from(tasks::applies_backward(&g, c_out, batch));
                    let run = |general: bool| {
                        tasks::GENERAL_ONLY.with(|f| f.set(general));
                        let x = candle_core::Var::from_tensor(&x).unwrap();
                        let wt = candle_core::Var::from_tensor(&wt).unwrap();
                        let b = candle_core::Var::from_tensor(&bias).unwrap();
                        let y = im2col_conv2d(&x, &wt, Some(&b), p, s, d).unwrap();
                        let r = rand(y.dims(), seed + 3);
                        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                        tasks::GENERAL_ONLY.with(|f| f.set(false));
                        let get = |v: &candle_core::Var| grads.get(v).unwrap().clone();
                        [y, get(&x), get(&wt), get(&b)]
                    };
                    let (fast, general) = (run(false), run(true));
                    for (what, a, b) in itertools_zip(&fast, &general) {
                        let diff = crate::testing::max_abs_diff(a, b).unwrap();
                        assert!(
                            diff < 1e-12,
                            "{what}: batch {batch} {h}x{w} k{k} p{p} s{s} d{d}: {diff}"
                        );
                    }
                }
            }
        }
        assert!(used > 10, "the task path ran in {used} cases only");
    }

    fn itertools_zip<'a>(
        a: &'a [Tensor; 4],
        b: &'a [Tensor; 4],
    ) -> impl Iterator<Item = (&'static str, &'a Tensor, &'a Tensor)> {
        ["y", "dx", "dW", "db"]
            .into_iter()
            .zip(a.iter().zip(b))
            .map(|(n, (a, b))| (n, a, b))
    }

    #[test]
    fn valid_ranges() {
        // p = 1, k offset 0: first output reads row -1 (invalid).
        assert_eq!(valid_range(0, 1, 1, 4, 4), (1, 4));
        assert_eq!(valid_range(2, 1, 1, 4, 4), (0, 3));
        assert_eq!(valid_range(0, 3, 1, 1, 5), (3, 4));
        assert_eq!(valid_range(0, 5, 1, 1, 3), (3, 3));
    }
}
