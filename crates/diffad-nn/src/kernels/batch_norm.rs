//! A fused CPU kernel for the `BatchNorm2d` layer (training and evaluation, optionally with
//! a fused ReLU).
//!
//! With per-channel statistics `mean_c`, `rstd_c = 1 / sqrt(var_c + eps)` (of the batch in
//! training, the running ones in evaluation), the forward is one pass
//! `y = a_c x + b_c`, `a_c = γ_c rstd_c`, `b_c = β_c - mean_c a_c`.
//!
//! The backward is two: per channel `dβ_c = Σ dy`, `dγ_c = Σ dy · x̂` over `(B, H, W)`, then
//! `dx = γ_c rstd_c (dy - dβ_c / n - x̂ dγ_c / n)` in training (the statistics depend on `x`)
//! or `dx = γ_c rstd_c dy` in evaluation.
//!
//! With `relu`, the op is `max(y, 0)`, and `dy` is masked by `a_c x + b_c > 0` before the
//! formulas above (the mask is recomputed from `x` in the backward pass).
//!
//! The batch statistics come from [`channel_stats`] (sums in `f64`). This replaces a dozen
//! whole-tensor passes of the plain-ops version and Candle's slow strided reductions over
//! `(0, 2, 3)`. Used on the CPU for `f32`/`f64`.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor, WithDType};

use crate::kernels::util::{contiguous, par_chunks_mut, with_slices};

/// `(batch, channels, spatial)` of an `(B, C, ...)` layout.
fn dims(l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let d = l.dims();
    if d.len() < 2 {
        candle_core::bail!("batch-norm kernel: expected (B, C, ...), got {d:?}")
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// Per channel `f(c, [the (B) slices of channel c])` in parallel.
fn per_channel<T: Sync, R: Send>(
    x: &[T],
    (b, c, s): (usize, usize, usize),
    f: impl Fn(usize, &mut dyn Iterator<Item = &[T]>) -> R + Sync,
) -> Vec<R> {
    let mut out: Vec<Option<R>> = (0..c).map(|_| None).collect();
    par_chunks_mut(&mut out, 1, x.len(), |ch, slot| {
        let mut slices = (0..b).map(|i| &x[(i * c + ch) * s..(i * c + ch + 1) * s]);
        slot[0] = Some(f(ch, &mut slices));
    });
    out.into_iter().flatten().collect()
}

/// Mean and biased variance of each channel over `(B, spatial)`.
fn stats<T: WithDType>(x: &[T], d: (usize, usize, usize)) -> Vec<T> {
    let n = (d.0 * d.2) as f64;
    let per = per_channel(x, d, |_, slices| {
        // Sixteen partial sums, so that the loop vectorises.
        let (mut s16, mut s2_16) = ([0f64; 16], [0f64; 16]);
        let (mut s, mut s2) = (0.0, 0.0);
        for sl in slices {
            let mut chunks = sl.chunks_exact(16);
            for c in &mut chunks {
                for k in 0..16 {
                    let v = c[k].to_f64();
                    s16[k] += v;
                    s2_16[k] += v * v;
                }
            }
            for v in chunks.remainder() {
                let v = v.to_f64();
                s += v;
                s2 += v * v;
            }
        }
        let s = s + s16.iter().sum::<f64>();
        let s2 = s2 + s2_16.iter().sum::<f64>();
        let mean = s / n;
        (mean, (s2 / n - mean * mean).max(0.0))
    });
    let (means, vars): (Vec<f64>, Vec<f64>) = per.into_iter().unzip();
    means.into_iter().chain(vars).map(T::from_f64).collect()
}

/// `y = a_c x + b_c`, or `max(a_c x + b_c, 0)` with `relu` (see the module doc).
fn forward<T: WithDType>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    st: &Stats,
    relu: bool,
    d: (usize, usize, usize),
) -> Vec<T> {
    let (_, c, s) = d;
    let mut out = crate::kernels::util::uninit_vec(x.len());
    let sm = s.max(1);
    par_chunks_mut(&mut out, sm, x.len(), |idx, o| {
        let xs = &x[idx * sm..idx * sm + o.len()];
        let ch = idx % c;
        let a_f = gamma[ch].to_f64() * st.rstd[ch];
        let (a, b) = (
            T::from_f64(a_f),
            T::from_f64(beta[ch].to_f64() - st.mean[ch] * a_f),
        );
        if relu {
            for (o, v) in o.iter_mut().zip(xs) {
                let y = *v * a + b;
                *o = if y > T::zero() { y } else { T::zero() };
            }
        } else {
            for (o, v) in o.iter_mut().zip(xs) {
                *o = *v * a + b;
            }
        }
    });
    out
}

/// `a_c`, `b_c` of the forward pass, for recomputing the ReLU mask.
fn affine(gamma: &[f64], beta: &[f64], st: &Stats, ch: usize) -> (f64, f64) {
    let a = gamma[ch] * st.rstd[ch];
    (a, beta[ch] - st.mean[ch] * a)
}

/// `[dx, dγ, dβ]` flattened (see the module doc).
fn backward<T: WithDType>(
    x: &[T],
    gamma: &[T],
    dy: &[T],
    op: &BatchNormOp,
    d: (usize, usize, usize),
) -> Vec<T> {
    let (b, c, s) = d;
    let (st, train) = (&op.stats, op.train);
    let n = (b * s) as f64;
    let gamma_f: Vec<f64> = gamma.iter().map(|g| g.to_f64()).collect();
    // The upstream gradient, masked by the ReLU when there is one.
    let grad = |ch: usize| {
        let (a, b0) = match &op.relu_beta {
            Some(beta) => affine(&gamma_f, beta, st, ch),
            None => (0.0, 0.0),
        };
        let relu = op.relu_beta.is_some();
        move |v: f64, g: f64| {
            if relu && v * a + b0 <= 0.0 {
                0.0
            } else {
                g
            }
        }
    };
    // Per channel Σ dy and Σ dy·x̂.
    let mut sums = vec![(0.0, 0.0); c];
    par_chunks_mut(&mut sums, 1, x.len(), |ch, slot| {
        let (mean, rstd) = (st.mean[ch], st.rstd[ch]);
        let mask = grad(ch);
        // Sixteen partial sums, so that the loop vectorises.
        let (mut sg16, mut sgx16) = ([0f64; 16], [0f64; 16]);
        let (mut sg, mut sgx) = (0.0, 0.0);
        for i in 0..b {
            let range = (i * c + ch) * s..(i * c + ch + 1) * s;
            let (xs, gs) = (&x[range.clone()], &dy[range]);
            let mut xc = xs.chunks_exact(16);
            let mut gc = gs.chunks_exact(16);
            for (xv, gv) in (&mut xc).zip(&mut gc) {
                for k in 0..16 {
                    let v = xv[k].to_f64();
                    let g = mask(v, gv[k].to_f64());
                    sg16[k] += g;
                    sgx16[k] += g * (v - mean);
                }
            }
            for (v, g) in xc.remainder().iter().zip(gc.remainder()) {
                let v = v.to_f64();
                let g = mask(v, g.to_f64());
                sg += g;
                sgx += g * (v - mean);
            }
        }
        let sg = sg + sg16.iter().sum::<f64>();
        let sgx = sgx + sgx16.iter().sum::<f64>();
        slot[0] = (sg, sgx * rstd);
    });
    let mut out = crate::kernels::util::uninit_vec(x.len() + 2 * c);
    let sm = s.max(1);
    par_chunks_mut(&mut out[..x.len()], sm, x.len(), |idx, o| {
        let xs = &x[idx * sm..idx * sm + o.len()];
        let gs = &dy[idx * sm..idx * sm + o.len()];
        let ch = idx % c;
        let (mean, rstd) = (st.mean[ch], st.rstd[ch]);
        let k = gamma[ch].to_f64() * rstd;
        // dx = k dy + bx x + e, with the batch-statistics terms only in training.
        let (bx, e) = if train {
            let (sg, sgx) = sums[ch];
            let bx = -k * rstd * sgx / n;
            (bx, -k * sg / n - bx * mean)
        } else {
            (0.0, 0.0)
        };
        if op.relu_beta.is_some() {
            let mask = grad(ch);
            for ((o, v), g) in o.iter_mut().zip(xs).zip(gs) {
                let v = v.to_f64();
                *o = T::from_f64(k * mask(v, g.to_f64()) + bx * v + e);
            }
            return;
        }
        let (k, bx, e) = (T::from_f64(k), T::from_f64(bx), T::from_f64(e));
        for ((o, v), g) in o.iter_mut().zip(xs).zip(gs) {
            *o = k * *g + bx * *v + e;
        }
    });
    let tail = &mut out[x.len()..];
    for (ch, (sg, sgx)) in sums.iter().enumerate() {
        tail[ch] = T::from_f64(*sgx);
        tail[c + ch] = T::from_f64(*sg);
    }
    out
}

/// Per-channel statistics used by the forward and backward passes.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    mean: Vec<f64>,
    rstd: Vec<f64>,
}

impl Stats {
    /// From per-channel means and (biased) variances.
    pub(crate) fn new(mean: Vec<f64>, var: &[f64], eps: f64) -> Self {
        let rstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        Self { mean, rstd }
    }
}

/// Mean and biased variance per channel of `x` `(B, C, ...)`, as a `(2, C)` tensor (no
/// gradient: the normalisation op differentiates through the statistics itself).
pub(crate) fn channel_stats(x: &Tensor) -> candle_core::Result<Tensor> {
    struct ChannelStats;
    impl CustomOp1 for ChannelStats {
        fn name(&self) -> &'static str {
            "diffad-batch-stats"
        }

        fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            let d = dims(l)?;
            let out = match s {
                CpuStorage::F32(v) => CpuStorage::F32(stats(contiguous(v, l)?, d)),
                CpuStorage::F64(v) => CpuStorage::F64(stats(contiguous(v, l)?, d)),
                _ => candle_core::bail!("batch-norm kernel: f32 and f64 only"),
            };
            Ok((out, Shape::from((2, d.1))))
        }
    }
    x.apply_op1_no_bwd(&ChannelStats)
}

/// Batch normalisation with its affine transform as a custom op of `(x, γ, β)`, with the
/// given statistics; `train` selects the backward (through the batch statistics or not).
pub(crate) struct BatchNormOp {
    pub(crate) stats: Stats,
    pub(crate) train: bool,
    /// `Some(β)` (its values) for a fused ReLU.
    pub(crate) relu_beta: Option<Vec<f64>>,
}

/// The gradients of [`BatchNormOp`], a custom op of `(x, γ, dy)` giving `[dx, dγ, dβ]`.
struct BatchNormGrads<'a>(&'a BatchNormOp);

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "diffad-batch-norm"
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
        let d = dims(l1)?;
        let out = with_slices!(self.name(), [(s1, l1), (s2, l2), (s3, l3)], |x, g, b| {
            forward(x, g, b, &self.stats, self.relu_beta.is_some(), d)
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
        crate::kernels::util::norm_grads(x, gamma, grad, &BatchNormGrads(self))
    }
}

impl CustomOp3 for BatchNormGrads<'_> {
    fn name(&self) -> &'static str {
        "diffad-batch-norm-backward"
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
        let d = dims(l1)?;
        let n = l1.shape().elem_count() + 2 * d.1;
        let out = with_slices!(self.name(), [(s1, l1), (s2, l2), (s3, l3)], |x, g, dy| {
            backward(x, g, dy, self.0, d)
        });
        Ok((out, Shape::from(n)))
    }
}
