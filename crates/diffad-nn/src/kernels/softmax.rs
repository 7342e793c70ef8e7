//! A fused CPU softmax over the last dimension, with its backward.
//!
//! `y_i = exp(x_i - max x) / Σ_j exp(x_j - max x)` per row in one parallel pass (sums in
//! `f64`), and `dx_i = y_i · (dy_i - Σ_j dy_j y_j)` in one more, instead of the five
//! whole-tensor passes (and their backward passes) of `candle_nn::ops::softmax`. The
//! attention scores of the UNet at 32x32 are `B·heads·1024²` values, so this matters.
//! Other devices and dtypes (and the CPU with `runtime::set_generic_ops(true)`) use
//! `candle_nn::ops::softmax`, which has the same value and gradient.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, WithDType, D};

use crate::kernels::util::{contiguous, par_chunks_mut};

fn softmax_rows<T: WithDType>(x: &[T], row: usize) -> Vec<T> {
    let mut out = crate::kernels::util::uninit_vec(x.len());
    par_chunks_mut(&mut out, row, x.len(), |i, o| {
        let xr = &x[i * row..i * row + o.len()];
        let max = xr
            .iter()
            .map(|v| v.to_f64())
            .fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for (o, v) in o.iter_mut().zip(xr) {
            let e = (v.to_f64() - max).exp();
            sum += e;
            *o = T::from_f64(e);
        }
        let inv = 1.0 / sum;
        for o in o.iter_mut() {
            *o = T::from_f64(o.to_f64() * inv);
        }
    });
    out
}

fn softmax_backward_rows<T: WithDType>(y: &[T], g: &[T], row: usize) -> Vec<T> {
    let mut out = crate::kernels::util::uninit_vec(y.len());
    par_chunks_mut(&mut out, row, y.len(), |i, o| {
        let (yr, gr) = (
            &y[i * row..i * row + o.len()],
            &g[i * row..i * row + o.len()],
        );
        let dot: f64 = yr
            .iter()
            .zip(gr)
            .map(|(a, b)| a.to_f64() * b.to_f64())
            .sum();
        for ((o, a), b) in o.iter_mut().zip(yr).zip(gr) {
            *o = T::from_f64(a.to_f64() * (b.to_f64() - dot));
        }
    });
    out
}

/// Softmax over the last dimension (forward: `CustomOp1`; backward: `CustomOp2` of
/// `(y, dy)`).
struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "diffad-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let row = l.dims().last().copied().unwrap_or(1).max(1);
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(crate::kernels::elementwise::softmax_rows_f32(
                contiguous(v, l)?,
                row,
            )),
            CpuStorage::F64(v) => CpuStorage::F64(softmax_rows(contiguous(v, l)?, row)),
            _ => candle_core::bail!("softmax kernel: f32 and f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        crate::kernels::util::unary_backward(res, grad, self)
    }
}

impl CustomOp2 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "diffad-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let row = l1.dims().last().copied().unwrap_or(1).max(1);
        let out = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => CpuStorage::F32(softmax_backward_rows(
                contiguous(y, l1)?,
                contiguous(g, l2)?,
                row,
            )),
            (CpuStorage::F64(y), CpuStorage::F64(g)) => CpuStorage::F64(softmax_backward_rows(
                contiguous(y, l1)?,
                contiguous(g, l2)?,
                row,
            )),
            _ => candle_core::bail!("softmax kernel: f32 and f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Softmax over the last dimension with a backward: the fused kernel on the CPU for
/// `f32`/`f64`, `candle_nn::ops::softmax(.., D::Minus1)` otherwise.
pub(crate) fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if crate::runtime::cpu_kernels(x.device())
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.rank() > 0
    {
        x.contiguous()?.apply_op1(SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_softmax_value_and_gradient() {
        let v: Vec<f64> = (0..60)
            .map(|i| ((i * 29 % 17) as f64 - 8.0) * 0.7)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(v, (3, 4, 5), &Device::Cpu).unwrap()).unwrap();
        let r: Vec<f64> = (0..60).map(|i| ((i * 7 % 11) as f64) - 5.0).collect();
        let r = Tensor::from_vec(r, (3, 4, 5), &Device::Cpu).unwrap();
        // The kernel itself, whatever `runtime::set_generic_ops` says.
        let ours = x.apply_op1(SoftmaxLastDim).unwrap();
        let theirs = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
        let max = |t: Tensor| -> f64 { t.abs().unwrap().max_all().unwrap().to_scalar().unwrap() };
        assert!(max((&ours - &theirs).unwrap()) < 1e-15);
        let go = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = (theirs * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (go.get(&x).unwrap(), gt.get(&x).unwrap());
        assert!(max(a.clone()) > 1e-3);
        assert!(max((a - b).unwrap()) < 1e-12);
    }
}
