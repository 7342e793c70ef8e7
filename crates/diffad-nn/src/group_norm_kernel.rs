//! A fused CPU kernel for the normalisation step of [`crate::GroupNorm`].
//!
//! `x̂ = (x - mean_g) / sqrt(var_g + eps)` over each group of each sample, in one parallel
//! pass (statistics accumulated in `f64`), with the backward
//! `dx = rstd · (dx̂ - mean_g(dx̂) - x̂ · mean_g(dx̂ · x̂))` in one more, instead of the
//! eight whole-tensor passes of the plain-ops version. Used on the CPU for `f32`/`f64`;
//! other devices and dtypes use the plain-ops version, which has the same value and
//! gradient.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

fn contiguous<'a, T>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("group-norm kernel: non-contiguous input"),
    }
}

/// Mean and `1/sqrt(var + eps)` of one group.
fn stats<T: WithDType>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

fn normalize<T: WithDType>(x: &[T], group_len: usize, eps: f64) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(group_len)
        .zip(x.par_chunks(group_len))
        .for_each(|(o, xg)| {
            let (mean, rstd) = stats(xg, eps);
            for (o, v) in o.iter_mut().zip(xg) {
                *o = T::from_f64((v.to_f64() - mean) * rstd);
            }
        });
    out
}

fn normalize_backward<T: WithDType>(x: &[T], g: &[T], group_len: usize, eps: f64) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(group_len)
        .zip(x.par_chunks(group_len).zip(g.par_chunks(group_len)))
        .for_each(|(o, (xg, gg))| {
            let (mean, rstd) = stats(xg, eps);
            let n = xg.len() as f64;
            let (mut sg, mut sgx) = (0.0, 0.0);
            for (v, d) in xg.iter().zip(gg) {
                let xh = (v.to_f64() - mean) * rstd;
                sg += d.to_f64();
                sgx += d.to_f64() * xh;
            }
            let (mg, mgx) = (sg / n, sgx / n);
            for ((o, v), d) in o.iter_mut().zip(xg).zip(gg) {
                let xh = (v.to_f64() - mean) * rstd;
                *o = T::from_f64(rstd * (d.to_f64() - mg - xh * mgx));
            }
        });
    out
}

/// The normalisation `x ↦ x̂` with `groups` groups per sample.
pub(crate) struct GroupNormalize {
    pub(crate) groups: usize,
    pub(crate) eps: f64,
}

impl GroupNormalize {
    fn group_len(&self, l: &Layout) -> usize {
        l.shape().elem_count() / (l.dims()[0] * self.groups).max(1)
    }
}

impl CustomOp1 for GroupNormalize {
    fn name(&self) -> &'static str {
        "diffad-group-normalize"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.group_len(l);
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(normalize(contiguous(v, l)?, n, self.eps)),
            CpuStorage::F64(v) => CpuStorage::F64(normalize(contiguous(v, l)?, n, self.eps)),
            _ => candle_core::bail!("group-norm kernel: f32 and f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dx = arg
            .detach()
            .contiguous()?
            .apply_op2_no_bwd(&grad.detach().contiguous()?, self)?;
        Ok(Some(dx))
    }
}

/// `(x, dx̂) ↦ dx`.
impl CustomOp2 for GroupNormalize {
    fn name(&self) -> &'static str {
        "diffad-group-normalize-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.group_len(l1);
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(normalize_backward(
                contiguous(x, l1)?,
                contiguous(g, l2)?,
                n,
                self.eps,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(normalize_backward(
                contiguous(x, l1)?,
                contiguous(g, l2)?,
                n,
                self.eps,
            )),
            _ => candle_core::bail!("group-norm kernel: f32 and f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}
