//! A fused CPU kernel for the `GroupNorm` layer, affine transform included, optionally
//! followed by SiLU (the `GroupNorm → SiLU` pair that opens every diffusers res block).
//!
//! Forward, in one parallel pass over each group of each sample (statistics accumulated in
//! `f64`): `y = x̂ · γ_c + β_c` with `x̂ = (x - mean_g) / sqrt(var_g + eps)`, computed as
//! `y = a_c x + b_c`, `a_c = γ_c · rstd_g`, `b_c = β_c - mean_g · a_c`; with SiLU, the output
//! is `silu(y)`. The statistics are kept with the op for its backward pass.
//!
//! Backward, in two more: with `dz = dy` (or `dz = dy · σ(y) (1 + y (1 - σ(y)))` after the
//! SiLU, `y` recomputed from `x`), `dβ_c = Σ dz`, `dγ_c = Σ dz · x̂` (over the batch and the
//! spatial positions), and with `dx̂ = γ_c dz`,
//! `dx = rstd · (dx̂ - mean_g(dx̂) - x̂ · mean_g(dx̂ · x̂))`.
//!
//! This replaces the eight whole-tensor passes of the plain-ops normalisation, the two of the
//! affine transform, and Candle's slow strided reductions for `dγ`/`dβ` (and, fused, the
//! SiLU's own pass, its output tensor and its gradient's). The sums run in sixteen `f64`
//! lanes, so that they vectorise; `f32` tensors use AVX-512 or AVX2 where the CPU has them.
//! Used on the CPU for `f32`/`f64`; other devices and dtypes use the plain-ops version, which
//! has the same value and gradients.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, WithDType};

use crate::kernels::elementwise::exp_f32;
use crate::kernels::util::{multiversion, par_chunks_mut, with_slices, Shared};

/// `Σ f(x_i)` with sixteen partial sums (so that the loop vectorises).
#[inline(always)]
fn sum16<T: WithDType>(x: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for k in 0..16 {
            acc[k] += f(c[k].to_f64());
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|v| f(v.to_f64())).sum();
    acc.iter().sum::<f64>() + tail
}

/// Mean and `1/sqrt(var + eps)` of one group (two passes).
#[inline(always)]
fn stats_body<T: WithDType>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = sum16(x, |v| v) / n;
    let var = sum16(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `Σ f(x_i)` for `f32` values: f32 partial sums over blocks of 256 values, added to f64
/// sums after each block (twice as wide vectors as f64 sums throughout).
#[inline(always)]
fn sum_blocks_f32(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f64; 16];
    for block in x.chunks(256) {
        let mut part = [0f32; 16];
        let mut chunks = block.chunks_exact(16);
        for c in &mut chunks {
            for k in 0..16 {
                part[k] += f(c[k]);
            }
        }
        for (k, v) in chunks.remainder().iter().enumerate() {
            part[k] += f(*v);
        }
        for k in 0..16 {
            acc[k] += f64::from(part[k]);
        }
    }
    acc.iter().sum()
}

multiversion! {
    /// [`stats_body`] for `f32` (two passes, the deviations from the mean in `f32`).
    fn stats_f32(x: &[f32], eps: f64, out: &mut (f64, f64)) {
        let n = x.len() as f64;
        let mean = sum_blocks_f32(x, |v| v) / n;
        let m = mean as f32;
        let var = sum_blocks_f32(x, |v| (v - m) * (v - m)) / n;
        *out = (mean, 1.0 / (var + eps).sqrt());
    }
}

fn stats<T: WithDType>(x: &[T], eps: f64) -> (f64, f64) {
    match as_f32(x) {
        Some(x) => {
            let mut out = (0.0, 0.0);
            stats_f32(x, eps, &mut out);
            out
        }
        None => stats_body(x, eps),
    }
}

/// `x` as `f32` values when `T` is `f32`.
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

/// `σ(y)` and the SiLU derivative factor `σ(y) (1 + y (1 - σ(y)))` (`f64` reference).
#[inline(always)]
fn silu_grad_f64(y: f64) -> f64 {
    let s = 1.0 / (1.0 + (-y).exp());
    s * (1.0 + y * (1.0 - s))
}

multiversion! {
    /// `y = a x + b`, then SiLU when `silu`.
    fn affine_f32(x: &[f32], a: f32, b: f32, silu: bool, y: &mut [f32]) {
        if silu {
            for (y, &x) in y.iter_mut().zip(x) {
                let z = a * x + b;
                *y = z / (1.0 + exp_f32(-z));
            }
        } else {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = a * x + b;
            }
        }
    }
}

/// `y = a x + b` (then SiLU) for any dtype.
fn affine<T: WithDType>(x: &[T], a: f64, b: f64, silu: bool, y: &mut [T]) {
    if let (Some(xf), Some(yf)) = (as_f32(x), as_f32_mut(y)) {
        return affine_f32(xf, a as f32, b as f32, silu, yf);
    }
    for (y, &x) in y.iter_mut().zip(x) {
        let z = a * x.to_f64() + b;
        *y = T::from_f64(if silu { z / (1.0 + (-z).exp()) } else { z });
    }
}

multiversion! {
    /// The channel sums of the backward pass: `Σ dz` and `Σ dz · (x - mean)`, where
    /// `dz = dy` or, with `silu`, `dy · silu'(a x + b)` (then also written to `dz_out`).
    fn channel_sums_f32(
        x: &[f32],
        dy: &[f32],
        ab: (f32, f32),
        mean: f64,
        silu: bool,
        dz_out: &mut [f32],
        sums: &mut (f64, f64)
    ) {
        let (a, b) = ab;
        let mean32 = mean as f32;
        // f32 partial sums over blocks of 256 values, added to f64 sums after each block
        // (the f32 lanes vectorise twice as wide as f64 ones).
        let mut sg = [0f64; 16];
        let mut sgx = [0f64; 16];
        let n = x.len() / 16 * 16;
        let (mut bg, mut bgx) = ([0f32; 16], [0f32; 16]);
        let flush = |bg: &mut [f32; 16], bgx: &mut [f32; 16], sg: &mut [f64; 16], sgx: &mut [f64; 16]| {
            for k in 0..16 {
                sg[k] += f64::from(bg[k]);
                sgx[k] += f64::from(bgx[k]);
            }
            *bg = [0f32; 16];
            *bgx = [0f32; 16];
        };
        if silu {
            for (i, ((xc, gc), dc)) in x[..n]
                .chunks_exact(16)
                .zip(dy[..n].chunks_exact(16))
                .zip(dz_out[..n].chunks_exact_mut(16))
                .enumerate()
            {
                for k in 0..16 {
                    let z = a * xc[k] + b;
                    let s = 1.0 / (1.0 + exp_f32(-z));
                    let d = gc[k] * s * (1.0 + z * (1.0 - s));
                    dc[k] = d;
                    bg[k] += d;
                    bgx[k] += d * (xc[k] - mean32);
                }
                if i % 16 == 15 {
                    flush(&mut bg, &mut bgx, &mut sg, &mut sgx);
                }
            }
        } else {
            for (i, (xc, gc)) in x[..n].chunks_exact(16).zip(dy[..n].chunks_exact(16)).enumerate() {
                for k in 0..16 {
                    bg[k] += gc[k];
                    bgx[k] += gc[k] * (xc[k] - mean32);
                }
                if i % 16 == 15 {
                    flush(&mut bg, &mut bgx, &mut sg, &mut sgx);
                }
            }
        }
        flush(&mut bg, &mut bgx, &mut sg, &mut sgx);
        let (mut tg, mut tgx) = (0.0, 0.0);
        for i in n..x.len() {
            let mut d = f64::from(dy[i]);
            if silu {
                d *= silu_grad_f64(f64::from(a) * f64::from(x[i]) + f64::from(b));
                dz_out[i] = d as f32;
            }
            tg += d;
            tgx += d * (f64::from(x[i]) - mean);
        }
        *sums = (sg.iter().sum::<f64>() + tg, sgx.iter().sum::<f64>() + tgx);
    }
}

multiversion! {
    /// `dx = a·src + b·x + e`, with `src` either `dy` (`Some`) or `dx` itself (`None`, the
    /// `dz` that [`channel_sums_f32`] left there).
    fn input_grad_f32(src: Option<&[f32]>, x: &[f32], abe: (f32, f32, f32), dx: &mut [f32]) {
        let (a, b, e) = abe;
        match src {
            Some(g) => {
                for ((d, &g), &x) in dx.iter_mut().zip(g).zip(x) {
                    *d = a * g + b * x + e;
                }
            }
            None => {
                for (d, &x) in dx.iter_mut().zip(x) {
                    *d = a * *d + b * x + e;
                }
            }
        }
    }
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

/// A `Vec` of `n` values that the caller writes before reading (every element).
fn uninit<T: WithDType>(n: usize) -> Vec<T> {
    crate::kernels::util::uninit_vec(n)
}

/// The forward pass; returns the output and each `(sample, group)`'s `(mean, rstd)`.
fn forward<T: WithDType>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    d: Dims,
    eps: f64,
    silu: bool,
) -> (Vec<T>, Vec<(f64, f64)>) {
    let mut out = uninit::<T>(x.len());
    let gl = d.group_len().max(1);
    let mut moments = vec![(0.0, 0.0); x.len() / gl];
    let slots = Shared(moments.as_mut_ptr());
    par_chunks_mut(&mut out, gl, x.len(), |idx, o| {
        let xg = &x[idx * gl..idx * gl + o.len()];
        let (mean, rstd) = stats(xg, eps);
        // SAFETY: slot idx of `moments`, written by this task only.
        unsafe { *slots.at(idx) = (mean, rstd) };
        let c0 = (idx % d.groups) * d.cpg;
        for (k, (o, xc)) in o
            .chunks_mut(d.spatial)
            .zip(xg.chunks(d.spatial))
            .enumerate()
        {
            let a = gamma[c0 + k].to_f64() * rstd;
            let b = beta[c0 + k].to_f64() - mean * a;
            affine(xc, a, b, silu, o);
        }
    });
    (out, moments)
}

/// `[dx, dγ, dβ]` flattened. `moments` are the forward pass's `(mean, rstd)` per
/// `(sample, group)`, recomputed when absent.
#[allow(clippy::too_many_arguments)]
fn backward<T: WithDType>(
    x: &[T],
    gamma: &[T],
    beta: &[f64],
    dy: &[T],
    d: Dims,
    eps: f64,
    silu: bool,
    moments: Option<&[(f64, f64)]>,
) -> Vec<T> {
    let c = d.channels();
    let mut dx = uninit::<T>(x.len() + 2 * c);
    // Per (sample, group): the per-channel Σ dz and Σ dz·x̂ of that sample.
    let mut partial = vec![0f64; 2 * x.len() / d.spatial.max(1)];
    let parts = Shared(partial.as_mut_ptr());
    let gl = d.group_len().max(1);
    par_chunks_mut(&mut dx[..x.len()], gl, x.len(), |idx, o| {
        let xg = &x[idx * gl..idx * gl + o.len()];
        let gg = &dy[idx * gl..idx * gl + o.len()];
        // SAFETY: the 2·cpg sums of group idx, written by this task only.
        let part = unsafe { std::slice::from_raw_parts_mut(parts.at(idx * 2 * d.cpg), 2 * d.cpg) };
        let (mean, rstd) = match moments {
            Some(m) => m[idx],
            None => stats(xg, eps),
        };
        let c0 = (idx % d.groups) * d.cpg;
        let n = xg.len() as f64;
        let (mut mg, mut mgx) = (0.0, 0.0);
        for k in 0..d.cpg {
            let range = k * d.spatial..(k + 1) * d.spatial;
            let gamma_k = gamma[c0 + k].to_f64();
            let a = gamma_k * rstd;
            let b = beta[c0 + k] - mean * a;
            let (sg, sgx) = channel_sums(
                &xg[range.clone()],
                &gg[range.clone()],
                (a, b),
                mean,
                silu,
                &mut o[range],
            );
            let sgx = sgx * rstd;
            part[2 * k] = sg;
            part[2 * k + 1] = sgx;
            mg += gamma_k * sg;
            mgx += gamma_k * sgx;
        }
        let (mg, mgx) = (mg / n, mgx / n);
        for k in 0..d.cpg {
            let gamma_k = gamma[c0 + k].to_f64();
            // dx = rstd·γ·dz - rstd·mg - rstd²·mgx·(x - mean) = a·dz + b·x + e.
            let a = rstd * gamma_k;
            let b = -rstd * rstd * mgx;
            let e = -rstd * mg + rstd * rstd * mgx * mean;
            let range = k * d.spatial..(k + 1) * d.spatial;
            // With SiLU, dz is already in `o` (from `channel_sums`).
            let src = (!silu).then(|| &gg[range.clone()]);
            input_grad(src, &xg[range.clone()], (a, b, e), &mut o[range]);
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

/// `Σ dz` and `Σ dz · (x - mean)` of one channel (see [`channel_sums_f32`]); with `silu`
/// `dz` is written to `dz_out`.
fn channel_sums<T: WithDType>(
    x: &[T],
    dy: &[T],
    (a, b): (f64, f64),
    mean: f64,
    silu: bool,
    dz_out: &mut [T],
) -> (f64, f64) {
    if let (Some(xf), Some(gf), Some(df)) = (as_f32(x), as_f32(dy), as_f32_mut(dz_out)) {
        let mut sums = (0.0, 0.0);
        channel_sums_f32(xf, gf, (a as f32, b as f32), mean, silu, df, &mut sums);
        return sums;
    }
    let (mut sg, mut sgx) = (0.0, 0.0);
    for ((&x, &g), dz) in x.iter().zip(dy).zip(dz_out.iter_mut()) {
        let (x, mut g) = (x.to_f64(), g.to_f64());
        if silu {
            g *= silu_grad_f64(a * x + b);
            *dz = T::from_f64(g);
        }
        sg += g;
        sgx += g * (x - mean);
    }
    (sg, sgx)
}

/// `dx = a·src + b·x + e` (see [`input_grad_f32`]).
fn input_grad<T: WithDType>(src: Option<&[T]>, x: &[T], (a, b, e): (f64, f64, f64), dx: &mut [T]) {
    let src_f = src.map(as_f32);
    if let (Some(xf), Some(df)) = (as_f32(x), as_f32_mut(dx)) {
        if let Some(Some(g)) = src_f {
            return input_grad_f32(Some(g), xf, (a as f32, b as f32, e as f32), df);
        }
        if src.is_none() {
            return input_grad_f32(None, xf, (a as f32, b as f32, e as f32), df);
        }
    }
    match src {
        Some(g) => {
            for ((d, &g), &x) in dx.iter_mut().zip(g).zip(x) {
                *d = T::from_f64(a * g.to_f64() + b * x.to_f64() + e);
            }
        }
        None => {
            for (d, &x) in dx.iter_mut().zip(x) {
                *d = T::from_f64(a * d.to_f64() + b * x.to_f64() + e);
            }
        }
    }
}

/// Group normalisation with its affine transform (then SiLU when `silu`), as a custom op
/// of `(x, γ, β)`. Its forward pass keeps the statistics for its backward.
pub(crate) struct GroupNormAffine {
    pub(crate) groups: usize,
    pub(crate) eps: f64,
    pub(crate) silu: bool,
    /// `(mean, rstd)` per `(sample, group)`, from the forward pass.
    moments: Mutex<Option<Vec<(f64, f64)>>>,
}

impl GroupNormAffine {
    /// The op (`silu`: followed by SiLU).
    pub(crate) fn new(groups: usize, eps: f64, silu: bool) -> Self {
        Self {
            groups,
            eps,
            silu,
            moments: Mutex::new(None),
        }
    }
}

/// The gradients of [`GroupNormAffine`], a custom op of `(x, γ, dy)` giving
/// `[dx, dγ, dβ]`. β is needed only with SiLU (to recompute the SiLU's input), and is
/// held here with the forward pass's statistics.
struct GroupNormGrads {
    groups: usize,
    eps: f64,
    silu: bool,
    beta: Vec<f64>,
    moments: Option<Vec<(f64, f64)>>,
}

fn dims(l: &Layout, groups: usize) -> candle_core::Result<Dims> {
    let d = l.dims();
    if d.len() < 2 || groups == 0 || !d[1].is_multiple_of(groups) {
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
        if self.silu {
            "diffad-group-norm-silu"
        } else {
            "diffad-group-norm"
        }
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
        let moments;
        let out = with_slices!(self.name(), [(s1, l1), (s2, l2), (s3, l3)], |x, g, b| {
            let (out, m) = forward(x, g, b, d, self.eps, self.silu);
            moments = m;
            out
        });
        if let Ok(mut slot) = self.moments.lock() {
            *slot = Some(moments);
        }
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = GroupNormGrads {
            groups: self.groups,
            eps: self.eps,
            silu: self.silu,
            beta: if self.silu {
                beta.to_dtype(DType::F64)?.to_vec1::<f64>()?
            } else {
                vec![0.0; gamma.elem_count()]
            },
            moments: self.moments.lock().ok().and_then(|mut m| m.take()),
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
        let moments = self
            .moments
            .as_deref()
            .filter(|m| m.len() * d.group_len() == l1.shape().elem_count());
        let out = with_slices!(self.name(), [(s1, l1), (s2, l2), (s3, l3)], |x, g, dy| {
            backward(x, g, &self.beta, dy, d, self.eps, self.silu, moments)
        });
        Ok((out, Shape::from(n)))
    }
}
