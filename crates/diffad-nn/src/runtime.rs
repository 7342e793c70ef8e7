//! Process-wide settings: which path the custom ops take, and the allocator setting that
//! makes the CPU kernels fast.
//!
//! # The CPU kernels and the device-generic path
//!
//! Every op with a custom CPU kernel in this crate (`Conv2d` with its input, weight and
//! bias gradients, Winograd included; `GroupNorm`; `BatchNorm2d` in training and
//! evaluation, with or without the fused ReLU; the attention softmax; [`crate::silu`]) has
//! a second, *device-generic* path built from Candle's differentiable ops: Candle's
//! `conv2d` plus a broadcast bias, the norms from `mean`/`sub`/`sqr`/`sqrt`/`div`,
//! `candle_nn::ops::softmax` and Candle's `silu`. That path is the one CUDA and half
//! precision run, and it computes the same function (PyTorch's `nn.Conv2d`,
//! `nn.GroupNorm`, `nn.BatchNorm2d`, `softmax` and `F.silu`, as the layers' docs state; the
//! kernels' unit tests and `tests/generic_path.rs` check values and every gradient). The resampling ops (`upsample_nearest2x`, `upsample_bilinear2d`, the
//! poolings) have no custom kernel: they are Candle ops on every device.
//!
//! [`set_generic_ops`]`(true)` (or [`force_generic_ops`] for a scope, or the environment
//! variable `DIFFAD_GENERIC_OPS=1`, read once at the first dispatch) makes the CPU take the
//! device-generic path too, so that the code CUDA runs can be tested on a machine without
//! a GPU. It is a global switch read by every dispatch point (an atomic load per op), meant
//! for tests and debugging: the generic path is several times slower on the CPU.
//!
//! # The allocator
//!
//! Every layer allocates its output afresh (Candle tensors are immutable). With glibc's
//! default settings, blocks above the mmap threshold (128 KiB growing to 32 MiB) are mapped
//! on allocation and unmapped on free, so each large activation is page-faulted in again, one
//! 4 KiB page at a time: 20-30% of a UNet forward pass on the paper's shapes. [`tune_allocator`]
//! turns this off, so freed blocks are reused.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::Device;

/// The environment variable that, set to `1` (or `true`, `yes`, `on`), forces the
/// device-generic path on the CPU from the start of the process (see the module doc). It is
/// read once, at the first dispatch or the first call of [`generic_ops`]; [`set_generic_ops`]
/// overrides it.
pub const GENERIC_OPS_VAR: &str = "DIFFAD_GENERIC_OPS";

/// The switch: not yet read from the environment, the CPU kernels, or the generic path.
const UNSET: u8 = 0;
const KERNELS: u8 = 1;
const GENERIC: u8 = 2;

static GENERIC_OPS: AtomicU8 = AtomicU8::new(UNSET);

fn state(generic: bool) -> u8 {
    if generic {
        GENERIC
    } else {
        KERNELS
    }
}

/// The setting [`GENERIC_OPS_VAR`] asks for (unset, empty, `0`, `false`, `no`, `off`: the
/// CPU kernels).
fn from_env() -> bool {
    let Ok(value) = std::env::var(GENERIC_OPS_VAR) else {
        return false;
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => {
            log::info!("{GENERIC_OPS_VAR}={value}: the CPU runs the device-generic ops");
            true
        }
        "" | "0" | "false" | "no" | "off" => false,
        _ => {
            log::warn!("{GENERIC_OPS_VAR}={value} is not a boolean; the CPU kernels stay on");
            false
        }
    }
}

/// Whether the device-generic path is forced on the CPU (see the module doc): the last
/// [`set_generic_ops`], or else [`GENERIC_OPS_VAR`] as read at the first call.
pub fn generic_ops() -> bool {
    match GENERIC_OPS.load(Ordering::Relaxed) {
        UNSET => {
            let wanted = state(from_env());
            // Another thread may have read the variable or set the switch meanwhile: its
            // value wins.
            match GENERIC_OPS.compare_exchange(UNSET, wanted, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => wanted == GENERIC,
                Err(current) => current == GENERIC,
            }
        }
        current => current == GENERIC,
    }
}

/// Forces (`true`) or releases (`false`) the device-generic path on the CPU for the whole
/// process, and returns the previous setting. Ops already recorded for a backward pass keep
/// the path they were built with (a custom op's backward is the kernel's; a Candle op's is
/// Candle's).
///
/// The switch is global: tests that toggle it must not run concurrently with tests that
/// assume the other setting (hold a mutex, or give them a test binary of their own).
pub fn set_generic_ops(generic: bool) -> bool {
    match GENERIC_OPS.swap(state(generic), Ordering::Relaxed) {
        UNSET => from_env(),
        previous => previous == GENERIC,
    }
}

/// Sets the switch of [`set_generic_ops`] for a scope: [`force_generic_ops`] returns it,
/// and dropping it restores the previous setting.
#[derive(Debug)]
#[must_use = "the previous setting is restored when the guard is dropped"]
pub struct GenericOpsGuard {
    previous: bool,
}

impl Drop for GenericOpsGuard {
    fn drop(&mut self) {
        set_generic_ops(self.previous);
    }
}

/// [`set_generic_ops`]`(generic)` until the returned guard is dropped.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu)?;
/// let fast = diffad_nn::silu(&x)?;
/// let generic = {
///     let _guard = diffad_nn::runtime::force_generic_ops(true);
///     diffad_nn::silu(&x)? // Candle's `silu`, the op CUDA runs
/// };
/// assert!(diffad_nn::testing::max_abs_diff(&fast, &generic)? < 1e-6);
/// # Ok::<(), diffad_nn::Error>(())
/// ```
pub fn force_generic_ops(generic: bool) -> GenericOpsGuard {
    GenericOpsGuard {
        previous: set_generic_ops(generic),
    }
}

/// Whether a custom CPU kernel may run on `device`: it is the CPU and the device-generic
/// path is not forced. Every dispatch point of the crate asks this (the kernels add their
/// own conditions: `f32`/`f64`, one group, matching dtypes).
pub(crate) fn cpu_kernels(device: &Device) -> bool {
    device.is_cpu() && !generic_ops()
}

/// Serves every allocation from the heap and never trims it (glibc `mallopt(M_MMAP_MAX, 0)`
/// and `M_TRIM_THRESHOLD`), so that freed activations are reused instead of being unmapped
/// and page-faulted in again. Returns whether the settings were applied (only on glibc).
///
/// This is a process-wide choice for the program, not the library: the resident memory stays
/// at its peak instead of shrinking after large allocations are freed. The `diffad` binary,
/// its examples and benchmarks call it first thing.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
