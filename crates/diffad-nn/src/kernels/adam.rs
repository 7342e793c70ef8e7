//! In-place CPU kernels for the `AdamW` update of [`crate::optim`]: the two moment updates
//! and the parameter update, each one pass over the parameter with no new tensor.
//!
//! They compute exactly what the optimiser's tensor expressions compute, in the same order
//! and precision (Candle's `tensor * f64` multiplies by the constant rounded to the
//! tensor's dtype, `tensor / f64` multiplies by its rounded reciprocal), so the two paths
//! give bit-identical parameters:
//!
//! ```text
//! m ← m·β₁ + g·(1 − β₁)          v ← v·β₂ + g²·(1 − β₂)
//! θ ← θ·(1 − lr·λ) − (m / (√v · (1/√(1 − β₂ᵗ)) + ε)) · (lr / (1 − β₁ᵗ))
//! ```
//!
//! Used for `f32`/`f64` parameters whose moments and gradient have the parameter's dtype;
//! with fifteen small tensor operations per parameter (each allocating its result), the
//! plain version spends more time on Candle's bookkeeping than on arithmetic for the
//! hundreds of small parameters of the tiny networks.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, WithDType};

/// `dst ← dst·β + f(g)·(1 − β)`, with `f(g) = g` or `g²` (`square`).
pub(crate) struct Moment {
    pub(crate) beta: f64,
    pub(crate) square: bool,
}

/// `θ ← θ·decay − (m / (√v · inv_bias2 + ε)) · step` (`decay` only when `Some`).
pub(crate) struct Update {
    pub(crate) decay: Option<f64>,
    pub(crate) inv_bias2: f64,
    pub(crate) eps: f64,
    pub(crate) step: f64,
}

fn slice_mut<'a, T>(s: &'a mut [T], l: &Layout) -> candle_core::Result<&'a mut [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut s[a..b]),
        None => candle_core::bail!("adam kernel: non-contiguous parameter {:?}", l.dims()),
    }
}

fn moment<T: WithDType>(m: &mut [T], g: &[T], beta: f64, square: bool) {
    let (b, c) = (T::from_f64(beta), T::from_f64(1.0 - beta));
    for (m, &g) in m.iter_mut().zip(g) {
        let f = if square { g * g } else { g };
        *m = *m * b + f * c;
    }
}

fn update<T: WithDType>(theta: &mut [T], m: &[T], v: &[T], u: &Update) {
    let inv = T::from_f64(u.inv_bias2);
    let eps = T::from_f64(u.eps);
    let step = T::from_f64(u.step);
    let decay = u.decay.map(T::from_f64);
    for ((t, &m), &v) in theta.iter_mut().zip(m).zip(v) {
        let base = match decay {
            Some(d) => *t * d,
            None => *t,
        };
        // The square root in f64, rounded: the correctly rounded root, as `f32::sqrt`.
        let root = T::from_f64(v.to_f64().sqrt());
        *t = base - (m / (root * inv + eps)) * step;
    }
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "diffad-adam-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        use crate::kernels::util::contiguous;
        match (s1, s2) {
            (CpuStorage::F32(m), CpuStorage::F32(g)) => moment(
                slice_mut(m, l1)?,
                contiguous(g, l2)?,
                self.beta,
                self.square,
            ),
            (CpuStorage::F64(m), CpuStorage::F64(g)) => moment(
                slice_mut(m, l1)?,
                contiguous(g, l2)?,
                self.beta,
                self.square,
            ),
            _ => candle_core::bail!("adam kernel: f32 or f64 moments and gradient of one dtype"),
        }
        Ok(())
    }
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "diffad-adam-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        use crate::kernels::util::contiguous;
        match (s1, s2, s3) {
            (CpuStorage::F32(t), CpuStorage::F32(m), CpuStorage::F32(v)) => update(
                slice_mut(t, l1)?,
                contiguous(m, l2)?,
                contiguous(v, l3)?,
                self,
            ),
            (CpuStorage::F64(t), CpuStorage::F64(m), CpuStorage::F64(v)) => update(
                slice_mut(t, l1)?,
                contiguous(m, l2)?,
                contiguous(v, l3)?,
                self,
            ),
            _ => candle_core::bail!("adam kernel: f32 or f64 parameter and moments of one dtype"),
        }
        Ok(())
    }
}

/// `Σ g²` in `f64` of a CPU tensor (sixteen partial sums), or `None` if it is not an
/// `f32`/`f64` CPU tensor.
pub(crate) fn sum_squares(g: &candle_core::Tensor) -> Option<f64> {
    let (storage, layout) = g.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    fn squares<T: WithDType>(s: &[T]) -> f64 {
        let mut acc = [0f64; 16];
        let mut chunks = s.chunks_exact(16);
        for c in &mut chunks {
            for k in 0..16 {
                let v = c[k].to_f64();
                acc[k] += v * v;
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|v| v.to_f64().powi(2)).sum();
        acc.iter().sum::<f64>() + tail
    }
    let (a, b) = layout.contiguous_offsets()?;
    match cpu {
        CpuStorage::F32(v) => Some(squares(&v[a..b])),
        CpuStorage::F64(v) => Some(squares(&v[a..b])),
        _ => None,
    }
}
