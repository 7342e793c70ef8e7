//! The CPU kernels behind the layers: Candle custom ops on raw `f32`/`f64` slices, each
//! with its backward pass.
//!
//! As in burn (`burn-nn` holds the layers, `burn-ndarray/ops` the kernels), the layers of
//! this crate decide *when* a kernel applies (CPU device, `f32`/`f64`, one group, ...) and
//! fall back to Candle's ops otherwise, and on the CPU too when
//! [`crate::runtime::set_generic_ops`] forces the device-generic path (every dispatch point
//! asks `runtime::cpu_kernels`); the kernels only compute. Imports run one way:
//! layers use kernels, kernels never use layers, and inside this folder
//!
//! ```text
//! conv ─► winograd ─► gemm        (conv also calls gemm itself)
//! softmax ─► elementwise          (the vectorised `exp`)
//! conv, group_norm, batch_norm, elementwise, softmax ─► util
//! ```
//!
//! | Kernel | Used by | What it replaces |
//! |---|---|---|
//! | [`conv`] (im2col + [`gemm`], dispatching to [`winograd`]) | `Conv2d` | Candle's `conv2d` and its naive `conv_transpose2d` backward |
//! | [`group_norm`] | `GroupNorm` | ten whole-tensor passes of the plain-ops version |
//! | [`batch_norm`] | `BatchNorm2d` | a dozen passes and Candle's strided reductions |
//! | [`elementwise`] | `silu` | Candle's scalar `exp` |
//! | [`softmax`] | `Attention` | five passes of `candle_nn::ops::softmax` |
//!
//! Each kernel is tested equal to the plain Candle version (values and gradients) in its
//! own unit tests and, through the layers, to finite differences (`tests/gradients.rs`).

pub(crate) mod adam;
pub(crate) mod batch_norm;
pub(crate) mod conv;
pub(crate) mod direct;
pub(crate) mod elementwise;
pub(crate) mod gemm;
pub(crate) mod group_norm;
pub(crate) mod resample;
pub(crate) mod softmax;
pub(crate) mod util;
pub(crate) mod winograd;
