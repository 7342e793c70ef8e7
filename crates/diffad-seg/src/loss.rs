//! Focal loss of the discriminative sub-network (paper Sec. 3.1 and 3.4,
//! DRAEM's `FocalLoss`).
//!
//! With `p = softmax(logits)` over the class axis, a one-hot target clamped to
//! `[smooth / (C - 1), 1 - smooth]` and
//!
//! ```text
//! pt   = sum_k onehot_k * p_k + smooth
//! loss = mean over pixels of  -alpha_t * (1 - pt)^gamma * ln(pt)
//! ```
//!
//! DRAEM (and DiffAD, which reuses it) calls it with `gamma = 2`, no `alpha`
//! and `smooth = 1e-5`; see [`FocalLossConfig::default`].

use candle_core::{DType, Tensor};

use crate::error::{shape_err, Error, Result};

/// Parameters of [`focal_loss`], with DRAEM's values as the default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FocalLossConfig {
    /// Focusing exponent gamma (DRAEM: 2).
    pub gamma: f64,
    /// Per-class weights, normalised to sum to one as DRAEM does for a list;
    /// `None` weighs every class 1 (DRAEM's setting). DRAEM's scalar form
    /// `alpha = a` with two classes is `Some(vec![a, 1 - a])`.
    pub alpha: Option<Vec<f64>>,
    /// Label smoothing `smooth` (DRAEM: 1e-5), also added to `pt`.
    pub smooth: f64,
}

impl Default for FocalLossConfig {
    fn default() -> Self {
        Self {
            gamma: 2.0,
            alpha: None,
            smooth: 1e-5,
        }
    }
}

/// `log(softmax(x))` over axis 1, computed as `x - m - ln(sum(exp(x - m)))`
/// with `m` the (detached) maximum, so it never overflows and its gradient is
/// exact (the log-sum-exp does not depend on the shift).
pub(crate) fn log_softmax_dim1(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(1)?.detach();
    let shifted = x.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Class index map of `mask`: `(B, H, W)` with values `round(mask)` as `u32`,
/// after checking they lie in `[0, classes)` and are finite.
fn target_classes(mask: &Tensor, classes: usize) -> Result<Tensor> {
    let flat = mask.flatten_all()?.to_dtype(DType::F32)?;
    let lo = flat.min(0)?.to_scalar::<f32>()?;
    let hi = flat.max(0)?.to_scalar::<f32>()?;
    // min/max skip NaN; the sum does not.
    let total = flat.sum_all()?.to_scalar::<f32>()?;
    if !lo.is_finite() || !hi.is_finite() || !total.is_finite() {
        return Err(Error::NonFinite("mask"));
    }
    let max_class = (classes - 1) as f32;
    if lo < -0.5 || hi >= max_class + 0.5 {
        return Err(Error::Config(format!(
            "mask values must round to a class in [0, {max_class}]; got range [{lo}, {hi}]"
        )));
    }
    // round(m) for m >= -0.5: floor(m + 0.5). DRAEM casts with `.long()`
    // (truncation); the two agree on the binary masks both pipelines use.
    Ok(((mask.to_dtype(DType::F32)? + 0.5)?.floor()?).to_dtype(DType::U32)?)
}

/// Focal loss of segmentation `logits` `(B, C, H, W)` against `mask`
/// (`(B, 1, H, W)` or `(B, H, W)`, class indices; for the binary anomaly
/// masks of DRAEM/DiffAD 0 = normal, 1 = anomalous). Returns a scalar.
///
/// Math (DRAEM `FocalLoss` applied to `softmax(logits)`, `docs/reference.md` §4):
/// `p = softmax(logits)`, `y_k = clamp(onehot_k, smooth/(C-1), 1-smooth)`,
/// `pt = sum_k y_k p_k + smooth`, `loss = mean(-alpha_t (1-pt)^gamma ln pt)`.
/// The probabilities come from a log-softmax; with `smooth = 0` the log
/// term is the log-softmax itself, so confident wrong predictions give a large
/// finite loss instead of `ln 0`; with `smooth > 0`, `pt >= smooth > 0`.
///
/// `alpha`, when given, holds one weight per class and is normalised to sum
/// to one (as DRAEM does); `alpha_t` is the weight of the pixel's true class.
///
/// ```
/// use candle_core::{Device, Tensor};
/// # fn main() -> diffad_seg::Result<()> {
/// let dev = Device::Cpu;
/// // One pixel, logits (0, 0): p = (0.5, 0.5), target 1.
/// let logits = Tensor::zeros((1, 2, 1, 1), candle_core::DType::F32, &dev)?;
/// let mask = Tensor::ones((1, 1, 1, 1), candle_core::DType::F32, &dev)?;
/// let loss = diffad_seg::focal_loss(&logits, &mask, 2.0, None, 0.0)?;
/// // -(1 - 0.5)^2 ln 0.5 = 0.25 ln 2
/// let v = loss.to_scalar::<f32>()?;
/// assert!((v - 0.25 * 2f32.ln()).abs() < 1e-6);
/// # Ok(()) }
/// ```
pub fn focal_loss(
    logits: &Tensor,
    mask: &Tensor,
    gamma: f64,
    alpha: Option<&[f64]>,
    smooth: f64,
) -> Result<Tensor> {
    let dims = logits.dims();
    if dims.len() != 4 || dims[1] < 2 {
        return Err(shape_err("focal_loss logits", "(B, C >= 2, H, W)", dims));
    }
    let (b, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let mask = match mask.dims() {
        [mb, 1, mh, mw] if (*mb, *mh, *mw) == (b, h, w) => mask.squeeze(1)?,
        [mb, mh, mw] if (*mb, *mh, *mw) == (b, h, w) => mask.clone(),
        other => {
            return Err(shape_err(
                "focal_loss mask",
                format!("({b}, 1, {h}, {w}) or ({b}, {h}, {w})"),
                other,
            ))
        }
    };
    if !(0.0..=1.0).contains(&smooth) {
        return Err(Error::Config(format!(
            "focal loss smooth must be in [0, 1], got {smooth}"
        )));
    }
    if !gamma.is_finite() || gamma < 0.0 {
        return Err(Error::Config(format!(
            "focal loss gamma must be finite and >= 0, got {gamma}"
        )));
    }
    let dev = logits.device();
    let dtype = logits.dtype();
    let classes = target_classes(&mask, c)?; // (B, H, W) u32

    // Hard one-hot (B, C, H, W): class k where classes == k.
    let ks = Tensor::arange(0u32, c as u32, dev)?.reshape((1, c, 1, 1))?;
    let hard = classes.unsqueeze(1)?.broadcast_eq(&ks)?.to_dtype(dtype)?;
    let onehot = if smooth > 0.0 {
        // clamp(onehot, lo, hi) for onehot in {0, 1} is an affine map.
        let lo = smooth / (c as f64 - 1.0);
        let hi = 1.0 - smooth;
        hard.affine(hi - lo, lo)?
    } else {
        hard.clone()
    };

    let logp = log_softmax_dim1(logits)?;
    let (pt, logpt) = if smooth > 0.0 {
        let pt = ((onehot * logp.exp()?)?.sum(1)? + smooth)?;
        let logpt = pt.log()?;
        (pt, logpt)
    } else {
        let logpt = (onehot * logp)?.sum(1)?;
        (logpt.exp()?, logpt)
    };

    let one_minus = pt.affine(-1.0, 1.0)?;
    let focus = if gamma == 0.0 {
        one_minus.ones_like()?
    } else if gamma == 1.0 {
        one_minus
    } else if gamma == 2.0 {
        one_minus.sqr()?
    } else {
        // (1 - pt) can round to a hair below zero; a negative base with a
        // fractional exponent would be NaN.
        one_minus.relu()?.powf(gamma)?
    };
    let mut per_pixel = (focus * logpt)?.neg()?; // (B, H, W)

    if let Some(alpha) = alpha {
        if alpha.len() != c {
            return Err(Error::Config(format!(
                "focal loss alpha has {} weights for {c} classes",
                alpha.len()
            )));
        }
        let total: f64 = alpha.iter().sum();
        if !total.is_finite() || total <= 0.0 || alpha.iter().any(|a| *a < 0.0) {
            return Err(Error::Config(format!(
                "focal loss alpha must be non-negative with a positive sum, got {alpha:?}"
            )));
        }
        let weights: Vec<f32> = alpha.iter().map(|a| (a / total) as f32).collect();
        let weights = Tensor::from_vec(weights, (1, c, 1, 1), dev)?.to_dtype(dtype)?;
        let alpha_t = hard.broadcast_mul(&weights)?.sum(1)?;
        per_pixel = (per_pixel * alpha_t)?;
    }
    Ok(per_pixel.mean_all()?)
}

/// [`focal_loss`] with the parameters of a [`FocalLossConfig`].
pub fn focal_loss_with(logits: &Tensor, mask: &Tensor, config: &FocalLossConfig) -> Result<Tensor> {
    focal_loss(
        logits,
        mask,
        config.gamma,
        config.alpha.as_deref(),
        config.smooth,
    )
}

/// Softmax over the class axis of `(B, C, H, W)` logits.
pub(crate) fn softmax_dim1(logits: &Tensor) -> Result<Tensor> {
    Ok(log_softmax_dim1(logits)?.exp()?)
}
