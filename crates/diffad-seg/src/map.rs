//! From logits to anomaly maps and image scores (`docs/reference.md` §5,
//! DRAEM's `test_DRAEM.py`).

use candle_core::Tensor;

use crate::error::{shape_err, Result};
use crate::loss::softmax_dim1;

/// The anomaly map: softmax over the class axis of `(B, 2, H, W)` logits,
/// channel 1 (the "anomalous" probability), as `(B, 1, H, W)` in `[0, 1]`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// # fn main() -> diffad_seg::Result<()> {
/// // logits (0, ln 3): p(anomalous) = 3 / (1 + 3)
/// let logits = Tensor::new(&[0f32, 3f32.ln()], &Device::Cpu)?.reshape((1, 2, 1, 1))?;
/// let map = diffad_seg::anomaly_map(&logits)?;
/// let v = map.flatten_all()?.to_vec1::<f32>()?[0];
/// assert!((v - 0.75).abs() < 1e-6);
/// # Ok(()) }
/// ```
pub fn anomaly_map(logits: &Tensor) -> Result<Tensor> {
    match logits.dims() {
        [_, c, _, _] if *c >= 2 => Ok(softmax_dim1(logits)?.narrow(1, 1, 1)?),
        other => Err(shape_err("anomaly_map logits", "(B, C >= 2, H, W)", other)),
    }
}

/// Image anomaly scores of anomaly maps `(B, 1, H, W)` (or `(B, H, W)`):
/// for each image, the maximum of the 21x21 mean filter of its map, zero
/// padding counted ([`diffad_metrics::image_score`] with
/// [`diffad_metrics::DRAEM_KERNEL`]; DRAEM's
/// `max(avg_pool2d(map, 21, stride 1, padding 10))`, `docs/reference.md` §5).
///
/// ```
/// use candle_core::{Device, Tensor};
/// # fn main() -> diffad_seg::Result<()> {
/// // A uniform map of 0.5: windows inside the image average 0.5.
/// let map = Tensor::full(0.5f32, (2, 1, 32, 32), &Device::Cpu)?;
/// let scores = diffad_seg::image_scores(&map)?;
/// assert_eq!(scores, vec![0.5, 0.5]);
/// # Ok(()) }
/// ```
pub fn image_scores(map: &Tensor) -> Result<Vec<f32>> {
    let (b, h, w) = match map.dims() {
        [b, 1, h, w] | [b, h, w] => (*b, *h, *w),
        other => {
            return Err(shape_err(
                "image_scores map",
                "(B, 1, H, W) or (B, H, W)",
                other,
            ))
        }
    };
    let values = map
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut scores = Vec::with_capacity(b);
    for image in values.chunks_exact(h * w) {
        scores.push(diffad_metrics::image_score(
            image,
            w,
            h,
            diffad_metrics::DRAEM_KERNEL,
        )?);
    }
    Ok(scores)
}
