//! Helpers shared by the CPU custom ops (`*_kernel.rs`).

use candle_core::{Layout, Tensor};

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

/// Splits the flattened `[dx, dγ, dβ]` of a normalisation backward into tensors shaped like
/// `x`, `gamma` and `gamma`.
pub(crate) fn split_norm_grads(
    all: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (n, c) = (x.elem_count(), gamma.elem_count());
    Ok((
        all.narrow(0, 0, n)?.reshape(x.shape())?,
        all.narrow(0, n, c)?.reshape(gamma.shape())?,
        all.narrow(0, n + c, c)?.reshape(gamma.shape())?,
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
                $(let $v = $crate::kernel_util::contiguous($v, $l)?;)+
                candle_core::CpuStorage::F32($body)
            }
            ($(candle_core::CpuStorage::F64($v),)+) => {
                $(let $v = $crate::kernel_util::contiguous($v, $l)?;)+
                candle_core::CpuStorage::F64($body)
            }
            _ => candle_core::bail!("{}: f32 or f64 tensors of one dtype only", $name),
        }
    };
}
pub(crate) use with_slices;
