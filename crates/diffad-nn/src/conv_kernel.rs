//! The convolution kernel behind [`crate::Conv2d`].
//!
//! On the CPU, for `f32`/`f64` and one group, the convolution is a Candle custom op
//! (`Im2ColConv2d`) whose
//!
//! * forward unfolds the input into columns (`im2col`, parallel over rows with rayon) and
//!   multiplies them by the `(C_out, C_in·k·k)` weight matrix with Candle's gemm;
//! * backward computes the weight gradient as `Σ_b grad_b · cols_bᵀ` and the input
//!   gradient as `col2im(Wᵀ · grad_b)`: two gemms and a scatter-add, instead of Candle's
//!   `conv_transpose2d`, a naive loop that dominates training time on the CPU.
//!
//! Columns are built for a few samples at a time (at most [`COLS_BUDGET`] elements), so the
//! memory overhead stays bounded and nothing is kept for the backward pass but the input
//! and the weight (as with Candle's own conv).
//!
//! Every other case (CUDA, half precision, grouped convolutions) uses Candle's `conv2d`,
//! with a workaround for its backward's shape bug (see [`candle_conv2d`]).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

/// Most elements of unfolded columns materialised at once (64 Mi values).
#[cfg(not(test))]
const COLS_BUDGET: usize = 1 << 26;
/// The unit tests unfold one sample at a time, so that the chunked path is exercised (the
/// integration tests use the real budget, one chunk per batch).
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

    /// How many samples to unfold at once.
    fn chunk(&self, batch: usize) -> usize {
        (COLS_BUDGET / (self.ckk() * self.l()).max(1)).clamp(1, batch.max(1))
    }
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

/// Unfolds `x` `(n, C, H, W)` (contiguous) into the column matrix `(C·kh·kw, n·Ho·Wo)`
/// (column `b·L + l` holds output position `l` of sample `b`), so that one gemm
/// `W · cols` serves the whole chunk of samples.
fn im2col<T: WithDType>(x: &[T], n: usize, g: &Geometry) -> Vec<T> {
    let (l, hw) = (g.l(), g.h * g.w);
    let mut cols = vec![T::zero(); g.ckk() * n * l];
    cols.par_chunks_mut(l).enumerate().for_each(|(idx, dst)| {
        let (r, b) = (idx / n, idx % n);
        let (ci, u, v) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
        let plane = &x[(b * g.c + ci) * hw..(b * g.c + ci + 1) * hw];
        let (i0, i1) = g.valid_i(u);
        let (j0, j1) = g.valid_j(v);
        if j0 >= j1 {
            return;
        }
        for i in i0..i1 {
            let y = i * g.stride + u * g.dilation - g.padding;
            let src = &plane[y * g.w..(y + 1) * g.w];
            let drow = &mut dst[i * g.wo..(i + 1) * g.wo];
            let x0 = j0 * g.stride + v * g.dilation - g.padding;
            if g.stride == 1 {
                drow[j0..j1].copy_from_slice(&src[x0..x0 + (j1 - j0)]);
            } else {
                for (k, d) in drow[j0..j1].iter_mut().enumerate() {
                    *d = src[x0 + k * g.stride];
                }
            }
        }
    });
    cols
}

/// Folds columns `(C·kh·kw, n·Ho·Wo)` back into `(n, C, H, W)`, summing overlaps (the
/// adjoint of [`im2col`]).
fn col2im<T: WithDType>(cols: &[T], n: usize, g: &Geometry) -> Vec<T> {
    let (l, hw, kk) = (g.l(), g.h * g.w, g.kh * g.kw);
    let mut out = vec![T::zero(); n * g.c * hw];
    out.par_chunks_mut(hw)
        .enumerate()
        .for_each(|(plane_idx, plane)| {
            let (b, ci) = (plane_idx / g.c, plane_idx % g.c);
            for u in 0..g.kh {
                let (i0, i1) = g.valid_i(u);
                for v in 0..g.kw {
                    let (j0, j1) = g.valid_j(v);
                    if j0 >= j1 {
                        continue;
                    }
                    let row = ci * kk + u * g.kw + v;
                    let src = &cols[(row * n + b) * l..(row * n + b + 1) * l];
                    for i in i0..i1 {
                        let y = i * g.stride + u * g.dilation - g.padding;
                        let dst = &mut plane[y * g.w..(y + 1) * g.w];
                        let x0 = j0 * g.stride + v * g.dilation - g.padding;
                        let srow = &src[i * g.wo + j0..i * g.wo + j1];
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
        });
    out
}

fn contiguous_slice<'a, T: WithDType>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("conv2d kernel: non-contiguous input"),
    }
}

/// `im2col` as a custom op without backward: `(n, C, H, W)` to `(C·kh·kw, n·Ho·Wo)`.
struct Im2Col(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "diffad-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = l.dims()[0];
        let g = &self.0;
        let shape = Shape::from((g.ckk(), n * g.l()));
        match s {
            CpuStorage::F32(v) => Ok((
                CpuStorage::F32(im2col(contiguous_slice(v, l)?, n, g)),
                shape,
            )),
            CpuStorage::F64(v) => Ok((
                CpuStorage::F64(im2col(contiguous_slice(v, l)?, n, g)),
                shape,
            )),
            _ => candle_core::bail!("diffad-im2col: unsupported dtype (f32 and f64 only)"),
        }
    }
}

/// `col2im` as a custom op without backward: `(C·kh·kw, n·Ho·Wo)` to `(n, C, H, W)`.
struct Col2Im(Geometry);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "diffad-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = l.dims()[1] / self.0.l().max(1);
        let g = &self.0;
        let shape = Shape::from((n, g.c, g.h, g.w));
        match s {
            CpuStorage::F32(v) => Ok((
                CpuStorage::F32(col2im(contiguous_slice(v, l)?, n, g)),
                shape,
            )),
            CpuStorage::F64(v) => Ok((
                CpuStorage::F64(col2im(contiguous_slice(v, l)?, n, g)),
                shape,
            )),
            _ => candle_core::bail!("diffad-col2im: unsupported dtype (f32 and f64 only)"),
        }
    }
}

/// The convolution as one differentiable custom op of `(x, weight)` (see the module doc).
struct Im2ColConv2d(Geometry);

impl Im2ColConv2d {
    /// `y = W · im2col(x)`, a few samples at a time, with tensors on the CPU.
    fn forward(&self, x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
        let g = &self.0;
        let (b, c_out) = (x.dim(0)?, weight.dim(0)?);
        let wmat = weight.reshape((c_out, g.ckk()))?;
        let chunk = g.chunk(b);
        let mut outs = Vec::with_capacity(b.div_ceil(chunk));
        for start in (0..b).step_by(chunk) {
            let n = chunk.min(b - start);
            let cols = x.narrow(0, start, n)?.apply_op1_no_bwd(&Im2Col(*g))?;
            // (C_out, CKK) · (CKK, n·L) -> (C_out, n, L) -> (n, C_out, L).
            let y = wmat.matmul(&cols)?.reshape((c_out, n, g.l()))?;
            outs.push(y.transpose(0, 1)?);
        }
        Tensor::cat(&outs, 0)?.reshape((b, c_out, g.ho, g.wo))
    }
}

impl CustomOp2 for Im2ColConv2d {
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
        fn tensor(s: &CpuStorage, l: &Layout) -> candle_core::Result<Tensor> {
            match s {
                CpuStorage::F32(v) => {
                    Tensor::from_slice(contiguous_slice(v, l)?, l.shape(), &Device::Cpu)
                }
                CpuStorage::F64(v) => {
                    Tensor::from_slice(contiguous_slice(v, l)?, l.shape(), &Device::Cpu)
                }
                _ => candle_core::bail!("diffad-conv2d: unsupported dtype (f32 and f64 only)"),
            }
        }
        let y = self.forward(&tensor(s1, l1)?, &tensor(s2, l2)?)?;
        let shape = y.shape().clone();
        let y = y.flatten_all()?;
        match y.dtype() {
            DType::F32 => Ok((CpuStorage::F32(y.to_vec1()?), shape)),
            _ => Ok((CpuStorage::F64(y.to_vec1()?), shape)),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = &self.0;
        let (b, c_out) = (x.dim(0)?, weight.dim(0)?);
        let x = x.detach();
        let wmat = weight.detach().reshape((c_out, g.ckk()))?;
        let wmat_t = wmat.t()?;
        let grad = grad.detach().reshape((b, c_out, g.l()))?;
        let chunk = g.chunk(b);
        let mut grad_w = Tensor::zeros((c_out, g.ckk()), x.dtype(), x.device())?;
        let mut grad_x = Vec::with_capacity(b.div_ceil(chunk));
        for start in (0..b).step_by(chunk) {
            let n = chunk.min(b - start);
            let cols = x.narrow(0, start, n)?.apply_op1_no_bwd(&Im2Col(*g))?;
            // The output gradient as (C_out, n·L), matching the columns' layout.
            let gy = grad
                .narrow(0, start, n)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((c_out, n * g.l()))?;
            // dW = gy · colsᵀ (the transpose is a strided view that gemm reads directly).
            grad_w = (grad_w + gy.matmul(&cols.t()?)?)?;
            // dx = col2im(Wᵀ · gy).
            let dcols = wmat_t.matmul(&gy)?;
            grad_x.push(dcols.apply_op1_no_bwd(&Col2Im(*g))?);
        }
        let grad_x = Tensor::cat(&grad_x, 0)?;
        Ok((Some(grad_x), Some(grad_w.reshape(weight.shape())?)))
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

/// The im2col/gemm convolution (CPU, `f32`/`f64`, one group), differentiable.
pub(crate) fn im2col_conv2d(
    x: &Tensor,
    weight: &Tensor,
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
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, Im2ColConv2d(g))
}

/// `conv2d` with PyTorch semantics (see [`crate::conv`]), without bias: the im2col kernel
/// where it applies, Candle's otherwise.
pub(crate) fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    padding: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
) -> candle_core::Result<Tensor> {
    let fast = x.device().is_cpu()
        && groups == 1
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == weight.dtype();
    if fast {
        im2col_conv2d(x, weight, padding, stride, dilation)
    } else {
        candle_conv2d(x, weight, padding, stride, dilation, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                let ours = im2col_conv2d(&x, &wt, p, s, d).unwrap();
                let theirs = candle_conv2d(&x, &wt, p, s, d, 1).unwrap();
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
                let diff = |a: &Tensor, b: &Tensor| -> f64 {
                    (a - b)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar()
                        .unwrap()
                };
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
            }
        }
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
