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
