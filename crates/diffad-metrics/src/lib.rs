//! # diffad-metrics
//!
//! The evaluation metrics of unsupervised surface anomaly detection, exact
//! and fast, with no dependency on a tensor library (inputs are slices or
//! `ndarray` views). They are the metrics of
//! DiffAD (Zhang et al., ICCV 2023, Sec. 4.1), DRAEM and the MVTec AD
//! benchmark (the protocol is summarised in `docs/reference.md` §5):
//!
//! | function | definition | reference |
//! |---|---|---|
//! | [`auroc`] | area under the ROC curve, ties as one diagonal step | scikit-learn `roc_auc_score` |
//! | [`average_precision`] | `sum_t (R_t - R_{t-1}) P_t`, step-wise | scikit-learn `average_precision_score` |
//! | [`f1_max`] | best `2PR / (P + R)` over thresholds | anomalib `F1Max` |
//! | [`aupro`] | normalised area under the per-region-overlap curve up to an FPR limit | MVTec AD evaluation |
//! | [`image_score`] | max of the `k x k` mean filter (zero padding counted) | DRAEM / DiffAD, `avg_pool2d` |
//! | [`psnr`] | PSNR over masked pixels | the paper's "direct copy" diagnostic |
//! | [`gaussian_smooth`] | Gaussian blur of an anomaly map, `reflect` edges | `scipy.ndimage.gaussian_filter` |
//!
//! Streaming accumulators ([`PixelMetrics`], [`ImageMetrics`], and
//! [`Evaluator`] for both) take one image at a time, so an evaluation never
//! needs all anomaly maps in memory, and produce a [`Report`] with a
//! per-defect-type breakdown that serialises to JSON.
//!
//! All curve metrics share one core: every sample is packed into a `u64`
//! (order-reversed `f32` bits of the score, defect type, ground-truth region),
//! the words are radix-sorted once by descending score and swept once,
//! merging tied scores into one threshold exactly as scikit-learn and the
//! MVTec AD script do. Sums are exact integers where possible (the ROC area)
//! and `f64` elsewhere.
//!
//! The per-image entry points also take `ndarray` views, with the size read
//! from the shape: [`image_score_view`], [`psnr_view`], [`aupro_view`],
//! [`PixelMetrics::update_view`], [`PixelMetrics::update_defect_view`] and
//! [`Evaluator::add_view`] give the same numbers as their slice versions
//! (an `(H, W)` view is row-major `width = W`, `height = H`).
//!
//! Every function returns [`Result`]; bad input (empty, one class only,
//! mismatched lengths or sizes, NaN or infinite scores with their position,
//! an FPR limit outside `(0, 1]`) is a typed [`Error`], never a panic.
//!
//! ```
//! use diffad_metrics::{auroc, average_precision, f1_max, Evaluator};
//!
//! let scores = [0.1f32, 0.4, 0.35, 0.8];
//! let labels = [false, false, true, true];
//! assert!((auroc(&scores, &labels)? - 0.75).abs() < 1e-12);
//! assert!((average_precision(&scores, &labels)? - 5.0 / 6.0).abs() < 1e-12);
//! assert_eq!(f1_max(&scores, &labels)?.threshold, 0.35);
//!
//! // A category evaluation, one image at a time.
//! let mut eval = Evaluator::with_options(3, 0.3)?;
//! let mask = [false, false, false, false, true, false, false, false, false];
//! eval.add("hole", &[0.0, 0.1, 0.0, 0.2, 0.9, 0.1, 0.0, 0.0, 0.0], &mask, 3, 3)?;
//! eval.add("good", &[0.1; 9], &[false; 9], 3, 3)?;
//! let report = eval.finish()?;
//! assert_eq!(report.pixel.auroc, 1.0);
//! println!("{report}");
//! # Ok::<(), diffad_metrics::Error>(())
//! ```

mod accumulate;
mod classification;
mod error;
mod image_score;
mod pro;
mod psnr;
mod ranked;
mod regions;
mod report;
mod smoothing;
mod view;

pub use accumulate::{
    ImageBreakdown, ImageMetrics, ImageReport, PixelBreakdown, PixelMetrics, PixelReport, GOOD,
};
pub use classification::{auroc, average_precision, classification_metrics, f1_max, BinaryMetrics};
pub use error::{Error, MetricsError, Result};
pub use image_score::{image_score, image_score_view, DRAEM_KERNEL};
pub use pro::{aupro, aupro_view, DEFAULT_FPR_LIMIT};
pub use psnr::{psnr, psnr_view};
pub use ranked::{F1Max, MAX_GROUPS, MAX_REGIONS};
pub use report::{Evaluator, Report};
pub use smoothing::gaussian_smooth;
