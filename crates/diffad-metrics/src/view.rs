//! `ndarray` views as inputs: each `_view` entry point turns its views into
//! row-major slices (borrowed when the view is already in standard layout,
//! copied otherwise) and its shape into `width` and `height`, then calls the
//! slice version, so both give identical numbers.

use std::borrow::Cow;

use ndarray::{ArrayView, ArrayView2, Dimension};

use crate::error::{Error, Result};

/// The elements of `view` in row-major (logical) order.
pub(crate) fn row_major<'a, T: Clone, D: Dimension>(view: &ArrayView<'a, T, D>) -> Cow<'a, [T]> {
    match view.to_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(view.iter().cloned().collect()),
    }
}

/// `(width, height)` of an `(H, W)` view.
pub(crate) fn width_height<T>(view: &ArrayView2<'_, T>) -> (usize, usize) {
    let (height, width) = view.dim();
    (width, height)
}

/// Errors with [`Error::ShapeMismatch`] unless `got` has shape `expected`.
pub(crate) fn check_shape(
    image: usize,
    what: &'static str,
    expected: &[usize],
    got: &[usize],
) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            image,
            what,
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}
