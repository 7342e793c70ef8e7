//! Helpers shared by the CPU custom ops of [`crate::kernels`]: slices of contiguous
//! storages, and the backward plumbing of elementwise ops and normalisations.

use candle_core::{CustomOp2, CustomOp3, Layout, Tensor};

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
