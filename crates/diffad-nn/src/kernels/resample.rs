//! CPU kernels for the resampling layers, each one pass forward and one backward:
//!
//! * nearest-neighbour 2x upsampling, `y[2i + a, 2j + e] = x[i, j]`, whose backward sums each
//!   2x2 block of `dy` (Candle's broadcast-and-reshape version copies a six-dimensional
//!   broadcast, and its backward is a strided reduction over two of those dimensions);
//! * max pooling with kernel = stride `k` (windows past the last whole one dropped), whose
//!   backward passes `dy` to every position of the window equal to its maximum, as Candle's
//!   `max` reduction does (so the two paths agree on ties too);
//! * bilinear upsampling with `align_corners = True`, `y[i, j] = Σ A_h[i, p] A_w[j, q] x[p, q]`
//!   with the two-tap interpolation rows of [`crate::resample`]'s matrices, whose backward
//!   scatters `dy` through the same taps.
//!
//! All are parallel over the `(B·C)` planes. Used on the CPU for `f32`/`f64`; elsewhere the
//! layers use the plain Candle ops, which compute the same values and gradients.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};

use crate::kernels::util::{par_chunks_mut, unary_backward, uninit_vec, with_slices};

/// `(planes, h, w)` of a `(B, C, H, W)` layout.
fn planes(l: &Layout, what: &str) -> candle_core::Result<(usize, usize, usize)> {
    match *l.dims() {
        [b, c, h, w] => Ok((b * c, h, w)),
        ref d => candle_core::bail!("{what} kernel: expected (B, C, H, W), got {d:?}"),
    }
}

/// Nearest-neighbour 2x upsampling (forward `CustomOp1`; backward: `Upsample2xGrad`).
struct Upsample2x;

/// The backward of [`Upsample2x`]: the sums of the 2x2 blocks of `dy` `(B, C, 2H, 2W)`.
struct Upsample2xGrad;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "diffad-upsample-nearest2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, h, w) = planes(l, self.name())?;
        let out = with_slices!(self.name(), [(s, l)], |x| upsample_forward(x, (n, h, w)));
        let d = l.dims();
        Ok((out, Shape::from((d[0], d[1], 2 * h, 2 * w))))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            grad.detach()
                .contiguous()?
                .apply_op1_no_bwd(&Upsample2xGrad)?,
        ))
    }
}

impl CustomOp1 for Upsample2xGrad {
    fn name(&self) -> &'static str {
        "diffad-upsample-nearest2x-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, h2, w2) = planes(l, self.name())?;
        let (h, w) = (h2 / 2, w2 / 2);
        let out = with_slices!(self.name(), [(s, l)], |g| upsample_backward(g, (n, h, w)));
        let d = l.dims();
        Ok((out, Shape::from((d[0], d[1], h, w))))
    }
}

/// `x` `(B, C, H, W)` upsampled to `(B, C, 2H, 2W)` by repetition.
pub(crate) fn upsample_nearest2x(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Upsample2x)
}

/// Max pooling with kernel = stride `k` (forward `CustomOp1`; backward `CustomOp2` of
/// `(x, dy)`).
struct MaxPool(usize);

impl MaxPool {
    fn out_dims(&self, l: &Layout) -> candle_core::Result<(usize, usize, usize, usize, usize)> {
        let (n, h, w) = planes(l, "max-pool")?;
        Ok((n, h, w, h / self.0, w / self.0))
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "diffad-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let k = self.0;
        let (n, h, w, oh, ow) = self.out_dims(l)?;
        let out = with_slices!(CustomOp1::name(self), [(s, l)], |x| {
            max_pool_forward(x, k, (n, h, w), (oh, ow))
        });
        let d = l.dims();
        Ok((out, Shape::from((d[0], d[1], oh, ow))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        unary_backward(arg, grad, self)
    }
}

impl CustomOp2 for MaxPool {
    fn name(&self) -> &'static str {
        "diffad-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let k = self.0;
        let (n, h, w, oh, ow) = self.out_dims(l1)?;
        let out = with_slices!(CustomOp2::name(self), [(s1, l1), (s2, l2)], |x, g| {
            max_pool_backward(x, g, k, (n, h, w), (oh, ow))
        });
        Ok((out, l1.shape().clone()))
    }
}

/// Max pooling of `x` `(B, C, H, W)` with kernel = stride `k` (`H/k x W/k` out).
pub(crate) fn max_pool2d(x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool(k))
}

/// The two taps `(lo, hi, frac)` of each output position of an `align_corners = True`
/// linear interpolation from `inp` to `out` samples (the rows of
/// `crate::resample::interpolation_matrix_align_corners`).
fn taps(inp: usize, out: usize) -> Vec<(usize, usize, f64)> {
    let scale = if out > 1 {
        (inp - 1) as f64 / (out - 1) as f64
    } else {
        0.0
    };
    (0..out)
        .map(|i| {
            let src = i as f64 * scale;
            let lo = (src.floor() as usize).min(inp - 1);
            (lo, (lo + 1).min(inp - 1), src - lo as f64)
        })
        .collect()
}

/// Bilinear upsampling to `(out_h, out_w)` with `align_corners = True` (forward
/// `CustomOp1`; backward: [`BilinearGrad`]).
struct Bilinear {
    out_h: usize,
    out_w: usize,
}

/// The backward of [`Bilinear`], a `CustomOp1` of `dy` giving `dx` `(B, C, H, W)`.
struct BilinearGrad {
    h: usize,
    w: usize,
}

impl CustomOp1 for Bilinear {
    fn name(&self) -> &'static str {
        "diffad-upsample-bilinear2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, h, w) = planes(l, self.name())?;
        let (oh, ow) = (self.out_h, self.out_w);
        let (th, tw) = (taps(h, oh), taps(w, ow));
        let out = with_slices!(self.name(), [(s, l)], |x| {
            bilinear_forward(x, (n, h, w), (oh, ow), (&th, &tw))
        });
        let d = l.dims();
        Ok((out, Shape::from((d[0], d[1], oh, ow))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(
            grad.detach()
                .contiguous()?
                .apply_op1_no_bwd(&BilinearGrad { h, w })?,
        ))
    }
}

impl CustomOp1 for BilinearGrad {
    fn name(&self) -> &'static str {
        "diffad-upsample-bilinear2d-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, oh, ow) = planes(l, self.name())?;
        let (h, w) = (self.h, self.w);
        let (th, tw) = (taps(h, oh), taps(w, ow));
        let out = with_slices!(self.name(), [(s, l)], |g| {
            bilinear_backward(g, (n, h, w), (oh, ow), (&th, &tw))
        });
        let d = l.dims();
        Ok((out, Shape::from((d[0], d[1], h, w))))
    }
}

/// Bilinear upsampling of `x` `(B, C, H, W)` to `(out_h, out_w)`, `align_corners = True`.
pub(crate) fn upsample_bilinear2d(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Bilinear { out_h, out_w })
}

/// [`Upsample2x`]'s forward on `n` planes of `h x w`.
fn upsample_forward<T: WithDType>(x: &[T], (n, h, w): (usize, usize, usize)) -> Vec<T> {
    let mut y = uninit_vec(n * 4 * h * w);
    par_chunks_mut(&mut y, 4 * h * w, 4 * x.len(), |p, yp| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for i in 0..h {
            let src = &xp[i * w..(i + 1) * w];
            let (top, bottom) = yp[2 * i * 2 * w..(2 * i + 2) * 2 * w].split_at_mut(2 * w);
            for (pair, v) in top.chunks_exact_mut(2).zip(src) {
                pair[0] = *v;
                pair[1] = *v;
            }
            bottom.copy_from_slice(top);
        }
    });
    y
}

/// [`Upsample2xGrad`] on `n` planes of `2h x 2w`, giving `n` planes of `h x w`.
fn upsample_backward<T: WithDType>(g: &[T], (n, h, w): (usize, usize, usize)) -> Vec<T> {
    let (h2, w2) = (2 * h, 2 * w);
    let mut dx = uninit_vec(n * h * w);
    par_chunks_mut(&mut dx, h * w, g.len(), |p, dp| {
        let gp = &g[p * h2 * w2..(p + 1) * h2 * w2];
        for i in 0..h {
            let top = &gp[2 * i * w2..(2 * i + 1) * w2];
            let bottom = &gp[(2 * i + 1) * w2..(2 * i + 2) * w2];
            for (j, d) in dp[i * w..(i + 1) * w].iter_mut().enumerate() {
                *d = top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1];
            }
        }
    });
    dx
}

/// [`MaxPool`]'s forward: `n` planes of `h x w` to `oh x ow` maxima of `k x k` windows.
fn max_pool_forward<T: WithDType>(
    x: &[T],
    k: usize,
    (n, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<T> {
    let mut y = uninit_vec(n * oh * ow);
    par_chunks_mut(&mut y, oh * ow, x.len(), |p, yp| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for i in 0..oh {
            let yr = &mut yp[i * ow..(i + 1) * ow];
            let first = &xp[i * k * w..];
            for (j, m) in yr.iter_mut().enumerate() {
                *m = first[j * k];
            }
            for u in 0..k {
                let row = &xp[(i * k + u) * w..(i * k + u + 1) * w];
                for (j, m) in yr.iter_mut().enumerate() {
                    for v in &row[j * k..(j + 1) * k] {
                        if *v > *m {
                            *m = *v;
                        }
                    }
                }
            }
        }
    });
    y
}

/// [`MaxPool`]'s backward: `dy` to every position of each window equal to its maximum.
fn max_pool_backward<T: WithDType>(
    x: &[T],
    g: &[T],
    k: usize,
    (n, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<T> {
    let mut dx = vec![T::zero(); n * h * w];
    par_chunks_mut(&mut dx, h * w, x.len(), |p, dp| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        let gp = &g[p * oh * ow..(p + 1) * oh * ow];
        for i in 0..oh {
            for j in 0..ow {
                let at = |u: usize, v: usize| (i * k + u) * w + j * k + v;
                let mut m = xp[at(0, 0)];
                for u in 0..k {
                    for v in 0..k {
                        if xp[at(u, v)] > m {
                            m = xp[at(u, v)];
                        }
                    }
                }
                // Every position equal to the maximum gets the gradient (Candle's `max`
                // backward).
                for u in 0..k {
                    for v in 0..k {
                        if xp[at(u, v)] == m {
                            dp[at(u, v)] = gp[i * ow + j];
                        }
                    }
                }
            }
        }
    });
    dx
}

/// The interpolation taps of [`Bilinear`]: `(lo, hi, frac)` per output row and column.
type Taps<'a> = (&'a [(usize, usize, f64)], &'a [(usize, usize, f64)]);

/// [`Bilinear`]'s forward on `n` planes.
fn bilinear_forward<T: WithDType>(
    x: &[T],
    (n, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
    (th, tw): Taps,
) -> Vec<T> {
    let mut y = uninit_vec(n * oh * ow);
    par_chunks_mut(&mut y, oh * ow, 4 * n * oh * ow, |p, yp| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        // Along the width first (each input row once), then along the height.
        let mut rows = vec![0f64; h * ow];
        for (r, row) in rows.chunks_exact_mut(ow).enumerate() {
            let src = &xp[r * w..(r + 1) * w];
            for (o, &(lo, hi, f)) in row.iter_mut().zip(tw) {
                *o = (1.0 - f) * src[lo].to_f64() + f * src[hi].to_f64();
            }
        }
        for (i, &(lo, hi, f)) in th.iter().enumerate() {
            let (a, b) = (&rows[lo * ow..(lo + 1) * ow], &rows[hi * ow..(hi + 1) * ow]);
            for ((o, a), b) in yp[i * ow..(i + 1) * ow].iter_mut().zip(a).zip(b) {
                *o = T::from_f64((1.0 - f) * a + f * b);
            }
        }
    });
    y
}

/// [`BilinearGrad`] on `n` planes of `oh x ow`, giving `n` planes of `h x w`.
fn bilinear_backward<T: WithDType>(
    g: &[T],
    (n, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
    (th, tw): Taps,
) -> Vec<T> {
    let mut dx = uninit_vec(n * h * w);
    par_chunks_mut(&mut dx, h * w, 4 * g.len(), |p, dp| {
        let gp = &g[p * oh * ow..(p + 1) * oh * ow];
        // The transpose of the forward: along the height, then the width.
        let mut rows = vec![0f64; h * ow];
        for (i, &(lo, hi, f)) in th.iter().enumerate() {
            for (j, v) in gp[i * ow..(i + 1) * ow].iter().enumerate() {
                let v = v.to_f64();
                rows[lo * ow + j] += (1.0 - f) * v;
                rows[hi * ow + j] += f * v;
            }
        }
        let mut acc = vec![0f64; w];
        for (r, row) in rows.chunks_exact(ow).enumerate() {
            acc.fill(0.0);
            for (v, &(lo, hi, f)) in row.iter().zip(tw) {
                acc[lo] += (1.0 - f) * v;
                acc[hi] += f * v;
            }
            for (d, a) in dp[r * w..(r + 1) * w].iter_mut().zip(&acc) {
                *d = T::from_f64(*a);
            }
        }
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn rand(shape: &[usize], seed: u64, ties: bool) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| {
                let v: f64 = rng.random_range(-1.0..1.0);
                // ReLU-like inputs: many exact zeros, so pooling windows tie.
                if ties {
                    v.max(0.0)
                } else {
                    v
                }
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Value and input gradient of `ours` and `theirs` agree (f64, and f32 loosely).
    fn agree(
        x: &Tensor,
        ours: impl Fn(&Tensor) -> Tensor,
        theirs: impl Fn(&Tensor) -> Tensor,
        what: &str,
    ) {
        for dtype in [DType::F64, DType::F32] {
            let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
            let (a, b) = (ours(&x), theirs(&x));
            assert_eq!(a.dims(), b.dims(), "{what}");
            let r = rand(a.dims(), 99, false).to_dtype(dtype).unwrap();
            let ga = (&a * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&b * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let diff = |p: &Tensor, q: &Tensor| crate::testing::max_abs_diff(p, q).unwrap();
            assert!(diff(&a, &b) < tol, "{what} {dtype:?} value");
            let (da, db) = (ga.get(&x).unwrap(), gb.get(&x).unwrap());
            assert!(
                diff(da, db) < tol,
                "{what} {dtype:?} gradient: {}",
                diff(da, db)
            );
        }
    }

    #[test]
    fn upsample_nearest_matches_candle_ops() {
        let x = rand(&[2, 3, 4, 5], 1, false);
        agree(
            &x,
            |x| upsample_nearest2x(x).unwrap(),
            |x| {
                let (b, c, h, w) = x.dims4().unwrap();
                x.reshape((b, c, h, 1, w, 1))
                    .unwrap()
                    .broadcast_as((b, c, h, 2, w, 2))
                    .unwrap()
                    .reshape((b, c, 2 * h, 2 * w))
                    .unwrap()
            },
            "upsample",
        );
    }

    /// Including ties (zeros) and cropped sizes (7x5 with k = 2, 9x8 with k = 3).
    #[test]
    fn max_pool_matches_candle_ops() {
        for (k, h, w) in [(2, 7, 5), (3, 9, 8), (2, 4, 4)] {
            let x = rand(&[2, 3, h, w], 2 + k as u64, true);
            agree(
                &x,
                |x| max_pool2d(x, k).unwrap(),
                |x| {
                    let (b, c, h, w) = x.dims4().unwrap();
                    let (oh, ow) = (h / k, w / k);
                    x.narrow(2, 0, oh * k)
                        .unwrap()
                        .narrow(3, 0, ow * k)
                        .unwrap()
                        .contiguous()
                        .unwrap()
                        .reshape((b, c, oh, k, ow, k))
                        .unwrap()
                        .max(5)
                        .unwrap()
                        .max(3)
                        .unwrap()
                },
                "max pool",
            );
        }
    }

    #[test]
    fn bilinear_matches_the_interpolation_matrices() {
        for (h, w, oh, ow) in [(3, 4, 6, 8), (1, 5, 4, 10), (4, 4, 4, 4), (5, 3, 2, 7)] {
            let x = rand(&[2, 2, h, w], 3 + h as u64, false);
            agree(
                &x,
                |x| upsample_bilinear2d(x, oh, ow).unwrap(),
                |x| {
                    let m = |i, o| {
                        crate::resample::interpolation_matrix_align_corners(
                            i,
                            o,
                            x.dtype(),
                            x.device(),
                        )
                        .unwrap()
                    };
                    let (b, c, _, _) = x.dims4().unwrap();
                    let y = x
                        .reshape((b * c * h, w))
                        .unwrap()
                        .matmul(&m(w, ow).t().unwrap())
                        .unwrap()
                        .reshape((b * c, h, ow))
                        .unwrap();
                    m(h, oh)
                        .unsqueeze(0)
                        .unwrap()
                        .broadcast_as((b * c, oh, h))
                        .unwrap()
                        .contiguous()
                        .unwrap()
                        .matmul(&y)
                        .unwrap()
                        .reshape((b, c, oh, ow))
                        .unwrap()
                },
                "bilinear",
            );
        }
    }
}
