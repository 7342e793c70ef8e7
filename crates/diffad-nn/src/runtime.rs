//! Process-wide settings that make the CPU kernels fast.
//!
//! Every layer allocates its output afresh (Candle tensors are immutable). With glibc's
//! default settings, blocks above the mmap threshold (128 KiB growing to 32 MiB) are mapped
//! on allocation and unmapped on free, so each large activation is page-faulted in again, one
//! 4 KiB page at a time: 20-30% of a UNet forward pass on the paper's shapes. [`tune_allocator`]
//! turns this off, so freed blocks are reused.

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
