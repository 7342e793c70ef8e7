//! A fused CPU kernel for the `GroupNorm` layer, affine transform included.
//!
//! Forward, in one parallel pass over each group of each sample (statistics accumulated in
//! `f64`): `y = x̂ · γ_c + β_c` with `x̂ = (x - mean_g) / sqrt(var_g + eps)`, computed as
//! `y = a_c x + b_c`, `a_c = γ_c · rstd_g`, `b_c = β_c - mean_g · a_c`.
//!
//! Backward, in one more: `dβ_c = Σ dy`, `dγ_c = Σ dy · x̂` (over the batch and the spatial
//! positions), and with `dx̂ = γ_c dy`,
//! `dx = rstd · (dx̂ - mean_g(dx̂) - x̂ · mean_g(dx̂ · x̂))`.
//!
//! This replaces the eight whole-tensor passes of the plain-ops normalisation, the two of the
//! affine transform, and Candle's slow strided reductions for `dγ`/`dβ`. Used on the CPU for
//! `f32`/`f64`; other devices and dtypes use the plain-ops version, which has the same value
//! and gradients.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::kernels::util::with_slices;

/// Mean and `1/sqrt(var + eps)` of one group.
fn stats<T: WithDType>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Shape of the problem: `groups` groups of `cpg` channels of `spatial` values per sample.
#[derive(Debug, Clone, Copy)]
struct Dims {
    groups: usize,
    cpg: usize,
    spatial: usize,
}

impl Dims {
    fn group_len(&self) -> usize {
        self.cpg * self.spatial
    }

    fn channels(&self) -> usize {
        self.groups * self.cpg
    }
}

fn forward<T: WithDType>(x: &[T], gamma: &[T], beta: &[T], d: Dims, eps: f64) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d.group_len())
        .zip(x.par_chunks(d.group_len()))
        .enumerate()
        .for_each(|(idx, (o, xg))| {
            let (mean, rstd) = stats(xg, eps);
            let c0 = (idx % d.groups) * d.cpg;
            for (k, (o, xc)) in o
                .chunks_mut(d.spatial)
                .zip(xg.chunks(d.spatial))
                .enumerate()
            {
                let a = gamma[c0 + k].to_f64() * rstd;
                let b = beta[c0 + k].to_f64() - mean * a;
                let (a, b) = (T::from_f64(a), T::from_f64(b));
                for (o, v) in o.iter_mut().zip(xc) {
                    *o = *v * a + b;
                }
            }
        });
    out
}

/// `[dx, dγ, dβ]` flattened.
fn backward<T: WithDType>(x: &[T], gamma: &[T], dy: &[T], d: Dims, eps: f64) -> Vec<T> {
    let c = d.channels();
    let mut dx = vec![T::zero(); x.len() + 2 * c];
    // Per (sample, group): the per-channel Σ dy and Σ dy·x̂ of that sample.
    let mut partial = vec![0f64; 2 * x.len() / d.spatial.max(1)];
    dx[..x.len()]
        .par_chunks_mut(d.group_len())
        .zip(
            x.par_chunks(d.group_len())
                .zip(dy.par_chunks(d.group_len())),
        )
        .zip(partial.par_chunks_mut(2 * d.cpg))
        .enumerate()
        .for_each(|(idx, ((o, (xg, gg)), part))| {
            let (mean, rstd) = stats(xg, eps);
            let c0 = (idx % d.groups) * d.cpg;
            let n = xg.len() as f64;
            let (mut mg, mut mgx) = (0.0, 0.0);
            for k in 0..d.cpg {
                let xs = &xg[k * d.spatial..(k + 1) * d.spatial];
                let gs = &gg[k * d.spatial..(k + 1) * d.spatial];
                let (mut sg, mut sgx) = (0.0, 0.0);
                for (v, g) in xs.iter().zip(gs) {
                    let g = g.to_f64();
                    sg += g;
                    sgx += g * (v.to_f64() - mean);
                }
                sgx *= rstd;
                part[2 * k] = sg;
                part[2 * k + 1] = sgx;
                let gamma_k = gamma[c0 + k].to_f64();
                mg += gamma_k * sg;
                mgx += gamma_k * sgx;
            }
            let (mg, mgx) = (mg / n, mgx / n);
            for k in 0..d.cpg {
                let gamma_k = gamma[c0 + k].to_f64();
                // dx = rstd·γ·dy - rstd·mg - rstd²·mgx·(x - mean) = a·dy + b·x + e.
                let a = T::from_f64(rstd * gamma_k);
                let b = T::from_f64(-rstd * rstd * mgx);
                let e = T::from_f64(-rstd * mg + rstd * rstd * mgx * mean);
                let range = k * d.spatial..(k + 1) * d.spatial;
                for ((o, v), g) in o[range.clone()]
                    .iter_mut()
                    .zip(&xg[range.clone()])
                    .zip(&gg[range])
                {
                    *o = a * *g + b * *v + e;
                }
            }
        });
    let (dgamma, dbeta) = (0..c)
        .map(|ch| {
            let (g, k) = (ch / d.cpg, ch % d.cpg);
            let mut sums = (0.0, 0.0);
            for part in partial.chunks(2 * c) {
                let p = &part[2 * (g * d.cpg + k)..];
                sums.0 += p[1];
                sums.1 += p[0];
            }
            sums
        })
        .unzip::<f64, f64, Vec<f64>, Vec<f64>>();
    let tail = &mut dx[x.len()..];
    for ch in 0..c {
        tail[ch] = T::from_f64(dgamma[ch]);
        tail[c + ch] = T::from_f64(dbeta[ch]);
    }
    dx
}

/// Group normalisation with its affine transform, as a custom op of `(x, γ, β)`.
pub(crate) struct GroupNormAffine {
    pub(crate) groups: usize,
    pub(crate) eps: f64,
}

/// The gradients of [`GroupNormAffine`], a custom op of `(x, γ, dy)` giving `[dx, dγ, dβ]`.
struct GroupNormGrads {
    groups: usize,
    eps: f64,
}

fn dims(l: &Layout, groups: usize) -> candle_core::Result<Dims> {
    let d = l.dims();
    if d.len() < 2 || groups == 0 || d[1] % groups != 0 {
        candle_core::bail!("group-norm kernel: {d:?} does not split into {groups} groups")
    }
    Ok(Dims {
        groups,
        cpg: d[1] / groups,
        spatial: d[2..].iter().product(),
    })
}

impl CustomOp3 for GroupNormAffine {
    fn name(&self) -> &'static str {
        "diffad-group-norm"
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
        let d = dims(l1, self.groups)?;
        let out = with_slices!(self.name(), [(s1, l1), (s2, l2), (s3, l3)], |x, g, b| {
            forward(x, g, b, d, self.eps)
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = GroupNormGrads {
            groups: self.groups,
            eps: self.eps,
        };
        crate::kernels::util::norm_grads(x, gamma, grad, &op)
    }
}

impl CustomOp3 for GroupNormGrads {
    fn name(&self) -> &'static str {
        "diffad-group-norm-backward"
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
        let d = dims(l1, self.groups)?;
        let n = l1.shape().elem_count() + 2 * d.channels();
        let out = with_slices!(self.name(), [(s1, l1), (s2, l2), (s3, l3)], |x, g, dy| {
            backward(x, g, dy, d, self.eps)
        });
        Ok((out, Shape::from(n)))
    }
}
