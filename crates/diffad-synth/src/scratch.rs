//! Per-thread scratch buffers reused across calls.

/// Runs `f` on a zeroed per-thread scratch buffer of `len` values. Reusing
/// the buffer avoids a fresh large allocation (and its page faults) per
/// mask; a nested use falls back to a new vector.
pub(crate) fn with_scratch<T: Copy + Default + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.resize(len, T::default());
            f(&mut buf[..])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}
