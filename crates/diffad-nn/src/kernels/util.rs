//! Helpers shared by the CPU custom ops of [`crate::kernels`]: slices of contiguous
//! storages, and the backward plumbing of elementwise ops and normalisations.

use candle_core::{CustomOp2, CustomOp3, Layout, Tensor, WithDType};

/// The elements of a contiguous storage described by `l`, or an error naming the layout.
pub(crate) fn contiguous<'a, T>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!(
            "diffad-nn CPU kernel: non-contiguous input {:?} (strides {:?})",
            l.dims(),
            l.stride()
        ),
    }
}

/// Runs `f(i)` for every `i` in `0..n` in parallel, on Candle's CPU thread pool (the pool
/// that Candle's own element-wise ops run on, the calling thread included), in chunks that
/// the threads take in turn.
///
/// The kernels of this crate used Rayon's global pool before; with Candle's element-wise
/// ops (the additions of every backward pass) on a pool of their own, a 2-core machine ran
/// four busy threads, each pool's workers spinning while the other's worked.
///
/// `work` is the loop's size in values touched or multiply-adds: below [`PAR_MIN_WORK`] the
/// loop runs on the calling thread, as handing it to the pool would cost more than it saves.
pub(crate) fn par_for(n: usize, work: usize, f: impl Fn(usize) + Sync) {
    if n <= 1 || work < PAR_MIN_WORK {
        (0..n).for_each(f);
        return;
    }
    candle_core::utils::barrier_pool().execute_chunked(n, |range| range.for_each(&f));
}

/// The work below which [`par_for`] stays on the calling thread (Candle's element-wise ops
/// use 64 Ki values).
pub(crate) const PAR_MIN_WORK: usize = 1 << 15;

/// The number of threads [`par_for`] runs on.
pub(crate) fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// `f(i, chunk_i)` for every chunk of `chunk` values of `out` (the last may be shorter), in
/// parallel ([`par_for`], with `work` as there).
pub(crate) fn par_chunks_mut<T: Send>(
    out: &mut [T],
    chunk: usize,
    work: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let (len, chunk) = (out.len(), chunk.max(1));
    let base = Shared(out.as_mut_ptr());
    par_for(len.div_ceil(chunk), work, |i| {
        let lo = i * chunk;
        let hi = (lo + chunk).min(len);
        // SAFETY: the chunks are disjoint and inside `out`, which outlives the call.
        let part = unsafe { std::slice::from_raw_parts_mut(base.at(lo), hi - lo) };
        f(i, part)
    });
}

/// A pointer to a buffer that parallel tasks write disjoint parts of.
pub(crate) struct Shared<T>(pub(crate) *mut T);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<T> {}
// SAFETY: every task writes only its own part of the buffer (see the users).
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer `offset` elements in (a method, so that closures capture the `Sync`
    /// wrapper rather than the raw pointer field).
    pub(crate) fn at(self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
}

/// `Σ x` in `f64`, with sixteen partial sums so that the loop vectorises (a plain fold is
/// one dependent addition per element).
pub(crate) fn sum<T: WithDType>(x: &[T]) -> f64 {
    let mut acc = [0f64; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for k in 0..16 {
            acc[k] += c[k].to_f64();
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|v| v.to_f64()).sum();
    acc.iter().sum::<f64>() + tail
}

/// A `Vec` of `n` zeros for a kernel to fill (every kernel writes all of it).
pub(crate) fn uninit_vec<T: WithDType>(n: usize) -> Vec<T> {
    vec![T::zero(); n]
}

/// The backward of an elementwise-style `CustomOp1`: its gradient op `op`, a `CustomOp2`
/// of `(saved, dy)` (`saved` is the op's input or output, whichever the formula needs).
pub(crate) fn unary_backward(
    saved: &Tensor,
    grad: &Tensor,
    op: &impl CustomOp2,
) -> candle_core::Result<Option<Tensor>> {
    let dx = saved
        .detach()
        .contiguous()?
        .apply_op2_no_bwd(&grad.detach().contiguous()?, op)?;
    Ok(Some(dx))
}

/// The gradients of a `CustomOp3` `(x, γ, β)`, as its `bwd` returns them.
pub(crate) type NormGrads = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// `(dx, dγ, dβ)` of a normalisation `(x, γ, β)`: runs its gradient op `op`, a `CustomOp3`
/// of `(x, γ, dy)` giving `[dx, dγ, dβ]` flattened, and splits the result.
pub(crate) fn norm_grads(
    x: &Tensor,
    gamma: &Tensor,
    grad: &Tensor,
    op: &impl CustomOp3,
) -> candle_core::Result<NormGrads> {
    let all = x
        .detach()
        .apply_op3_no_bwd(&gamma.detach(), &grad.detach().contiguous()?, op)?;
    let (n, c) = (x.elem_count(), gamma.elem_count());
    Ok((
        Some(all.narrow(0, 0, n)?.reshape(x.shape())?),
        Some(all.narrow(0, n, c)?.reshape(gamma.shape())?),
        Some(all.narrow(0, n + c, c)?.reshape(gamma.shape())?),
    ))
}

/// `with_slices!(name, [(storage, layout), ...], |a, b, ...| body)`: borrows contiguous
/// `f32` or `f64` storages (all of one dtype) as slices `a, b, ...` and wraps the `Vec`
/// that `body` returns in a storage of the same dtype; other dtypes are an error naming
/// the op.
macro_rules! with_slices {
    ($name:expr, [$(($s:expr, $l:expr)),+ $(,)?], |$($v:ident),+| $body:expr) => {
        match ($($s,)+) {
            ($(candle_core::CpuStorage::F32($v),)+) => {
                $(let $v = $crate::kernels::util::contiguous($v, $l)?;)+
                candle_core::CpuStorage::F32($body)
            }
            ($(candle_core::CpuStorage::F64($v),)+) => {
                $(let $v = $crate::kernels::util::contiguous($v, $l)?;)+
                candle_core::CpuStorage::F64($body)
            }
            _ => candle_core::bail!("{}: f32 or f64 tensors of one dtype only", $name),
        }
    };
}
pub(crate) use with_slices;

/// Defines `$name(args)` running `$body` compiled for AVX-512, AVX2+FMA or the baseline,
/// whichever the CPU has.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
