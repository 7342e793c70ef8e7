//! Vectorised elementwise CPU kernels: a fast `exp` for `f32`, and SiLU with its backward.
//!
//! `exp` is Cephes' `expf`: `exp(x) = 2^n · exp(r)` with `n = round(x / ln 2)`,
//! `r = x - n ln 2` (ln 2 split in two parts for exactness) and `exp(r)` a degree-7
//! polynomial on `|r| <= ln 2 / 2`, within 2 ulp of the exact value for
//! `x` in `[-87.3, 88.3]` (clamped outside; NaN stays NaN). Every operation is branch-free,
//! so the loops below compile to AVX-512 or AVX2 code, chosen at run time.
//!
//! SiLU is `y = x · σ(x)` with `σ(x) = 1 / (1 + exp(-x))`, and its backward
//! `dx = dy · σ(x) · (1 + x (1 - σ(x)))`; one pass each instead of Candle's scalar `exp`.
//! `f64` tensors use the exact `exp`. Other devices and dtypes (and the CPU with
//! `runtime::set_generic_ops(true)`) use Candle's `silu`, same value and gradient.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::util::{contiguous, multiversion, par_chunks_mut};

/// Elements per parallel task.
const GRAIN: usize = 1 << 14;

/// `exp(x)` for `f32` (see the module doc).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.376_26;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(LO, HI);
    let k = x * LOG2E + ROUND;
    let n = k - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    // The low mantissa bits of `k` hold the integer `n` (offset by the bits of ROUND), so
    // `2^n` is built with integer operations on the bits, which vectorise (a float-to-int
    // `as` cast would not).
    let biased = k.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

multiversion! {
    /// `y = x · σ(x)`.
    fn silu_f32(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x / (1.0 + exp_f32(-x));
        }
    }
}

multiversion! {
    /// `dx = dy · σ(x) · (1 + x (1 - σ(x)))`.
    fn silu_backward_f32(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            let s = 1.0 / (1.0 + exp_f32(-x));
            *dx = g * s * (1.0 + x * (1.0 - s));
        }
    }
}

multiversion! {
    /// `y = exp(x - shift)`, returning `Σ y`.
    fn exp_shifted_sum_f32(x: &[f32], shift: f32, y: &mut [f32], sum: &mut f32) {
        // Sixteen partial sums, so that the reduction vectorises.
        let mut acc = [0f32; 16];
        let mut xs = x.chunks_exact(16);
        let mut ys = y.chunks_exact_mut(16);
        for (xc, yc) in (&mut xs).zip(&mut ys) {
            for k in 0..16 {
                let e = exp_f32(xc[k] - shift);
                yc[k] = e;
                acc[k] += e;
            }
        }
        let mut total = 0.0;
        for (y, &x) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
            *y = exp_f32(x - shift);
            total += *y;
        }
        *sum = total + acc.iter().sum::<f32>();
    }
}

multiversion! {
    /// `*max = max(x)` (sixteen partial maxima, so that it vectorises).
    fn max_f32(x: &[f32], max: &mut f32) {
        let mut acc = [f32::NEG_INFINITY; 16];
        let mut xs = x.chunks_exact(16);
        for xc in &mut xs {
            for k in 0..16 {
                acc[k] = acc[k].max(xc[k]);
            }
        }
        *max = xs.remainder().iter().chain(&acc).copied().fold(f32::NEG_INFINITY, f32::max);
    }
}

multiversion! {
    /// `y *= a`.
    fn scale_f32(y: &mut [f32], a: f32) {
        for v in y.iter_mut() {
            *v *= a;
        }
    }
}

/// Row-wise `y = softmax(x)` for `f32` rows of length `row`, with the fast `exp`.
pub(crate) fn softmax_rows_f32(x: &[f32], row: usize) -> Vec<f32> {
    let mut out = crate::kernels::util::uninit_vec::<f32>(x.len());
    par_chunks_mut(&mut out, row, x.len(), |i, o| {
        let xr = &x[i * row..i * row + o.len()];
        let mut max = f32::NEG_INFINITY;
        max_f32(xr, &mut max);
        let mut sum = 0.0;
        exp_shifted_sum_f32(xr, max, o, &mut sum);
        scale_f32(o, 1.0 / sum);
    });
    out
}

/// SiLU as a custom op (forward: `CustomOp1`; backward: `CustomOp2` of `(x, dy)`).
struct Silu;

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "diffad-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => {
                let x = contiguous(v, l)?;
                let mut y = crate::kernels::util::uninit_vec::<f32>(x.len());
                par_chunks_mut(&mut y, GRAIN, x.len(), |i, y| {
                    silu_f32(&x[i * GRAIN..i * GRAIN + y.len()], y)
                });
                CpuStorage::F32(y)
            }
            CpuStorage::F64(v) => CpuStorage::F64(
                contiguous(v, l)?
                    .par_iter()
                    .map(|&x| x / (1.0 + (-x).exp()))
                    .collect(),
            ),
            _ => candle_core::bail!("silu kernel: f32 and f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        crate::kernels::util::unary_backward(arg, grad, self)
    }
}

impl CustomOp2 for Silu {
    fn name(&self) -> &'static str {
        "diffad-silu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                let (x, g) = (contiguous(x, l1)?, contiguous(g, l2)?);
                let mut dx = crate::kernels::util::uninit_vec::<f32>(x.len());
                par_chunks_mut(&mut dx, GRAIN, x.len(), |i, dx| {
                    let r = i * GRAIN..i * GRAIN + dx.len();
                    silu_backward_f32(&x[r.clone()], &g[r], dx)
                });
                CpuStorage::F32(dx)
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(
                contiguous(x, l1)?
                    .par_iter()
                    .zip(contiguous(g, l2)?.par_iter())
                    .map(|(&x, &g)| {
                        let s = 1.0 / (1.0 + (-x).exp());
                        g * s * (1.0 + x * (1.0 - s))
                    })
                    .collect(),
            ),
            _ => candle_core::bail!("silu kernel: f32 and f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// SiLU with a backward: the kernel above on the CPU for `f32`/`f64`, Candle's `silu`
/// otherwise.
pub(crate) fn silu(x: &Tensor) -> candle_core::Result<Tensor> {
    if crate::runtime::cpu_kernels(x.device()) && matches!(x.dtype(), DType::F32 | DType::F64) {
        x.contiguous()?.apply_op1(Silu)
    } else {
        x.silu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fast `exp` is within 2 ulp (relative 2.5e-7) of the exact one over its range, and
    /// propagates NaN.
    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64) - exact).abs() / exact);
            x += 0.001_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-200.0) < 1e-37);
        assert!(exp_f32(200.0) > 1e38 && exp_f32(200.0).is_finite());
    }

    /// SiLU matches Candle's in value and gradient, in `f32` (fast path) and `f64`.
    #[test]
    fn silu_matches_candle() {
        for dtype in [DType::F32, DType::F64] {
            let v: Vec<f64> = (0..1000).map(|i| (i as f64 - 500.0) * 0.037).collect();
            let x = Var::from_tensor(
                &Tensor::from_vec(v, (10, 100), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let r = Tensor::randn(0f32, 1., (10, 100), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            // The kernel itself, whatever `runtime::set_generic_ops` says.
            let ours = x.apply_op1(Silu).unwrap();
            let theirs = x.silu().unwrap();
            let go = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (&theirs * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let diff = |a: &Tensor, b: &Tensor| crate::testing::max_abs_diff(a, b).unwrap();
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            assert!(diff(&ours, &theirs) < tol, "{dtype:?} value");
            assert!(
                diff(go.get(&x).unwrap(), gt.get(&x).unwrap()) < tol,
                "{dtype:?} gradient"
            );
        }
    }

    /// The `f32` softmax rows sum to one and match the exact formula.
    #[test]
    fn softmax_rows_f32_matches_exact() {
        let x: Vec<f32> = (0..3 * 37)
            .map(|i| ((i * 7919) % 97) as f32 * 0.31 - 15.0)
            .collect();
        let y = softmax_rows_f32(&x, 37);
        for (xr, yr) in x.chunks(37).zip(y.chunks(37)) {
            let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = xr.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (&xv, &yv) in xr.iter().zip(yr) {
                let exact = (xv as f64 - max).exp() / sum;
                assert!((yv as f64 - exact).abs() < 1e-6, "{yv} vs {exact}");
            }
        }
    }
}
