//! The one wrapper around the `gemm` crate that every CPU kernel multiplies through.
//!
//! `gemm` takes raw pointers with row and column strides, so a transposed operand or one
//! matrix of a strided batch (Winograd's `U_ξ`, `V_ξ`) is a view, not a copy. The crate
//! picks its AVX-512 kernels (through its `x86-v4` feature) or AVX2 ones at run time and
//! runs in parallel on Rayon's pool.

use candle_core::WithDType;

/// A dense matrix operand of [`gemm()`]: a pointer with row and column strides (in elements).
#[derive(Clone, Copy)]
pub(crate) struct Mat<T> {
    pub(crate) ptr: *const T,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

impl<T> Mat<T> {
    /// A row-major matrix with `cols` columns starting at `s[offset]`.
    pub(crate) fn rows(s: &[T], offset: usize, cols: usize) -> Self {
        Self {
            ptr: s[offset..].as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transposed view.
    pub(crate) fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// `dst = [dst +] lhs · rhs` with `lhs` `(m, k)`, `rhs` `(k, n)` and `dst` row-major with row
/// stride `dst_rs`, through the `gemm` crate (AVX-512 kernels where the CPU has them,
/// parallel on Rayon's pool).
///
/// # Safety
/// `lhs`, `rhs` must address `m·k`, `k·n` valid elements through their strides, and
/// `dst[..]` must hold the `(m, n)` block at row stride `dst_rs`; none may alias `dst`.
pub(crate) unsafe fn gemm<T: WithDType>(
    dims: (usize, usize, usize),
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
) {
    debug_assert!(dims.0 == 0 || dims.1 == 0 || dst.len() >= (dims.0 - 1) * dst_rs + dims.1);
    let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm_with(
            dims,
            dst.as_mut_ptr(),
            dst_rs,
            accumulate,
            lhs,
            rhs,
            threads,
        )
    }
}

/// [`gemm()`] on the calling thread only, for kernels that parallelise over independent
/// pieces of work themselves (one small product per Rayon task). `dst` is a pointer, so
/// that tasks can write disjoint blocks of one buffer.
///
/// # Safety
/// As [`gemm()`], with `dst` valid for writes of the `(m, n)` block at row stride `dst_rs`
/// and written by no other thread meanwhile.
pub(crate) unsafe fn gemm_serial<T: WithDType>(
    dims: (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm_with(
            dims,
            dst,
            dst_rs,
            accumulate,
            lhs,
            rhs,
            gemm::Parallelism::None,
        )
    }
}

unsafe fn gemm_with<T: WithDType>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller guarantees the extents; `T` is `f32` or `f64`, which gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}
