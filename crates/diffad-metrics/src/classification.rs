//! Threshold-free binary classification metrics on plain slices: AUROC,
//! average precision and the best F1, all from one sort.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ranked::{pack, sort_descending, sweep, F1Max, Subset, SweepOutput};

/// AUROC, average precision and F1-max of one set of scores, computed from a
/// single sort (see [`classification_metrics`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Area under the ROC curve ([`auroc`]).
    pub auroc: f64,
    /// Average precision ([`average_precision`]).
    pub average_precision: f64,
    /// Best F1 and its threshold ([`f1_max`]).
    pub f1_max: F1Max,
}

impl From<SweepOutput> for BinaryMetrics {
    fn from(out: SweepOutput) -> Self {
        Self {
            auroc: out.auroc,
            average_precision: out.average_precision,
            f1_max: out.f1_max,
        }
    }
}

/// Area under the ROC curve, equal to scikit-learn's `roc_auc_score`.
///
/// With `P` positives and `N` negatives and one ROC point per distinct score
/// (so tied scores form one diagonal step), the area is the trapezoid sum
/// `sum_t (FPR_t - FPR_{t-1}) (TPR_t + TPR_{t-1}) / 2`, which equals the
/// Mann-Whitney statistic `P(s+ > s-) + P(s+ = s-) / 2`. It is accumulated
/// in exact integer arithmetic and divided once.
///
/// Errors: empty input, `scores`/`labels` of different lengths, a NaN or
/// infinite score (its index is given), or only one class present.
///
/// ```
/// let auc = diffad_metrics::auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true])?;
/// assert!((auc - 0.75).abs() < 1e-12);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn auroc(scores: &[f32], labels: &[bool]) -> Result<f64> {
    classification_metrics(scores, labels).map(|m| m.auroc)
}

/// Average precision, equal to scikit-learn's `average_precision_score`:
/// the step-wise (not interpolated) area under the precision-recall curve,
/// `AP = sum_t (R_t - R_{t-1}) P_t`, with one point per distinct score.
///
/// Errors as for [`auroc`].
///
/// ```
/// let ap = diffad_metrics::average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true])?;
/// assert!((ap - 0.8333333333333333).abs() < 1e-12);
/// # Ok::<(), diffad_metrics::Error>(())
/// ```
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Result<f64> {
    classification_metrics(scores, labels).map(|m| m.average_precision)
}

/// The best F1 over all thresholds, with its threshold (see [`F1Max`]).
///
/// Errors as for [`auroc`].
pub fn f1_max(scores: &[f32], labels: &[bool]) -> Result<F1Max> {
    classification_metrics(scores, labels).map(|m| m.f1_max)
}

/// AUROC, average precision and F1-max from one radix sort of the scores:
/// cheaper than calling [`auroc`], [`average_precision`] and [`f1_max`] in
/// turn. Errors as for [`auroc`].
pub fn classification_metrics(scores: &[f32], labels: &[bool]) -> Result<BinaryMetrics> {
    let (mut packed, positives, negatives) = pack_scores(scores, labels)?;
    check_two_classes(positives, negatives)?;
    sort_descending(&mut packed);
    Ok(sweep(&packed, Subset::All, positives, negatives, None).into())
}

/// Validates scores and labels and packs them (group 0, region 1 for a
/// positive). Returns the packed samples and the class counts.
fn pack_scores(scores: &[f32], labels: &[bool]) -> Result<(Vec<u64>, u64, u64)> {
    if scores.is_empty() {
        return Err(Error::EmptyInput { what: "scores" });
    }
    if labels.len() != scores.len() {
        return Err(Error::LengthMismatch {
            what: "labels",
            expected: scores.len(),
            got: labels.len(),
        });
    }
    // One parallel pass validates, counts and packs.
    const CHUNK: usize = 1 << 16;
    let mut packed = vec![0u64; scores.len()];
    let positives = packed
        .par_chunks_mut(CHUNK)
        .zip(scores.par_chunks(CHUNK).zip(labels.par_chunks(CHUNK)))
        .map(|(out, (s, l))| {
            let mut positives = 0u64;
            let mut finite = true;
            for ((o, &s), &l) in out.iter_mut().zip(s).zip(l) {
                finite &= s.is_finite();
                positives += u64::from(l);
                *o = pack(s, 0, u32::from(l));
            }
            finite.then_some(positives)
        })
        .try_reduce(|| 0, |a, b| Some(a + b));
    let Some(positives) = positives else {
        // Report the first non-finite score.
        let index = scores.iter().position(|s| !s.is_finite()).unwrap_or(0);
        return Err(Error::NonFiniteScore {
            index,
            value: scores[index],
        });
    };
    let negatives = scores.len() as u64 - positives;
    Ok((packed, positives, negatives))
}

/// The curve metrics need both classes.
pub(crate) fn check_two_classes(positives: u64, negatives: u64) -> Result<()> {
    if positives == 0 || negatives == 0 {
        return Err(Error::OneClass {
            positives,
            negatives,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sklearn_docstring_example() {
        // scikit-learn's precision_recall_curve docstring example.
        let scores = [0.1, 0.4, 0.35, 0.8];
        let labels = [false, false, true, true];
        let m = classification_metrics(&scores, &labels).unwrap();
        assert!((m.auroc - 0.75).abs() < 1e-15);
        assert!((m.average_precision - (0.5 * 1.0 + 0.5 * (2.0 / 3.0))).abs() < 1e-15);
        // F1 at 0.35: P = 2/3, R = 1 -> 0.8; at 0.8: P = 1, R = 0.5 -> 2/3.
        assert!((m.f1_max.f1 - 0.8).abs() < 1e-15);
        assert_eq!(m.f1_max.threshold, 0.35);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            auroc(&[], &[]),
            Err(Error::EmptyInput { what: "scores" })
        ));
        assert!(matches!(
            auroc(&[0.1, 0.2], &[true]),
            Err(Error::LengthMismatch {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            auroc(&[0.1, f32::NAN, 0.3], &[true, false, true]),
            Err(Error::NonFiniteScore { index: 1, .. })
        ));
        assert!(matches!(
            average_precision(&[0.1, 0.2, f32::INFINITY], &[true, false, true]),
            Err(Error::NonFiniteScore { index: 2, .. })
        ));
        assert!(matches!(
            f1_max(&[0.1, 0.2], &[true, true]),
            Err(Error::OneClass {
                positives: 2,
                negatives: 0
            })
        ));
        assert!(matches!(
            auroc(&[0.1, 0.2], &[false, false]),
            Err(Error::OneClass {
                positives: 0,
                negatives: 2
            })
        ));
    }

    #[test]
    fn signed_zeros_are_one_threshold() {
        // -0.0 == 0.0, so this is a single tie: AUROC 0.5.
        let auc = auroc(&[-0.0, 0.0], &[true, false]).unwrap();
        assert_eq!(auc, 0.5);
    }
}
