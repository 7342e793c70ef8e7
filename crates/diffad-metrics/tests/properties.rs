//! Property tests: invariants that hold for every input, and brute-force
//! oracles written straight from the definitions (quadratic, independent of
//! the radix-sort-and-sweep implementation).
//!
//! Note on "AP >= positive rate": it is NOT an invariant. For P = 2 positives
//! ranked below N = 1 negative, AP = (1/2)(1/2) + (1/2)(2/3) = 7/12 < 2/3.
//! What holds is AP >= (1/P) sum_{i=1..P} i / (N + i), the AP of the worst
//! ranking (which is <= the positive rate), and AP = positive rate when all
//! scores tie; both are checked below.

use diffad_metrics::{
    aupro, auroc, average_precision, classification_metrics, f1_max, image_score, psnr,
    PixelMetrics,
};
use proptest::prelude::*;

/// Scores drawn from a few levels (many ties) and labels with both classes.
fn tied_case() -> impl Strategy<Value = (Vec<f32>, Vec<bool>)> {
    (2usize..120).prop_flat_map(|n| {
        (
            prop::collection::vec(0u8..12, n),
            prop::collection::vec(any::<bool>(), n),
        )
            .prop_map(|(levels, mut labels)| {
                labels[0] = true;
                labels[1] = false;
                (levels.iter().map(|&l| f32::from(l)).collect(), labels)
            })
    })
}

/// Continuous scores (mostly distinct), both classes.
fn continuous_case() -> impl Strategy<Value = (Vec<f32>, Vec<bool>)> {
    (2usize..150).prop_flat_map(|n| {
        (
            prop::collection::vec(-1e3f32..1e3, n),
            prop::collection::vec(any::<bool>(), n),
        )
            .prop_map(|(scores, mut labels)| {
                labels[0] = true;
                labels[1] = false;
                (scores, labels)
            })
    })
}

fn any_case() -> impl Strategy<Value = (Vec<f32>, Vec<bool>)> {
    prop_oneof![tied_case(), continuous_case()]
}

/// AUROC as the Mann-Whitney statistic, by counting all pairs.
fn brute_auroc(scores: &[f32], labels: &[bool]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, &si) in scores.iter().enumerate() {
        for (j, &sj) in scores.iter().enumerate() {
            if labels[i] && !labels[j] {
                pairs += 1.0;
                if si > sj {
                    wins += 1.0;
                } else if si == sj {
                    wins += 0.5;
                }
            }
        }
    }
    wins / pairs
}

/// Distinct thresholds, highest first.
fn thresholds(scores: &[f32]) -> Vec<f32> {
    let mut t = scores.to_vec();
    t.sort_by(|a, b| b.total_cmp(a));
    t.dedup_by(|a, b| a == b);
    t
}

fn counts_at(scores: &[f32], labels: &[bool], t: f32) -> (f64, f64) {
    let tp = scores
        .iter()
        .zip(labels)
        .filter(|(&s, &l)| l && s >= t)
        .count();
    let fp = scores
        .iter()
        .zip(labels)
        .filter(|(&s, &l)| !l && s >= t)
        .count();
    (tp as f64, fp as f64)
}

fn brute_ap(scores: &[f32], labels: &[bool]) -> f64 {
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let (mut ap, mut recall_prev) = (0.0, 0.0);
    for t in thresholds(scores) {
        let (tp, fp) = counts_at(scores, labels, t);
        let recall = tp / positives;
        ap += (recall - recall_prev) * tp / (tp + fp);
        recall_prev = recall;
    }
    ap
}

fn brute_f1(scores: &[f32], labels: &[bool]) -> f64 {
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    thresholds(scores)
        .into_iter()
        .map(|t| {
            let (tp, fp) = counts_at(scores, labels, t);
            2.0 * tp / (tp + fp + positives)
        })
        .fold(0.0, f64::max)
}

/// 8-connected regions by repeated min-label propagation (deliberately a
/// different algorithm from the library's flood fill).
fn brute_regions(mask: &[bool], width: usize, height: usize) -> Vec<usize> {
    let mut label: Vec<usize> = (0..mask.len())
        .map(|i| if mask[i] { i + 1 } else { 0 })
        .collect();
    loop {
        let mut changed = false;
        for y in 0..height {
            for x in 0..width {
                let i = y * width + x;
                if label[i] == 0 {
                    continue;
                }
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                            continue;
                        }
                        let j = ny as usize * width + nx as usize;
                        if label[j] != 0 && label[j] < label[i] {
                            label[i] = label[j];
                            changed = true;
                        }
                    }
                }
            }
        }
        if !changed {
            return label;
        }
    }
}

/// AU-PRO straight from the MVTec AD definition.
fn brute_aupro(
    maps: &[Vec<f32>],
    masks: &[Vec<bool>],
    width: usize,
    height: usize,
    limit: f64,
) -> f64 {
    // (image, label) -> list of pixel scores.
    let mut regions: std::collections::BTreeMap<(usize, usize), Vec<f32>> = Default::default();
    let mut normal = Vec::new();
    for (image, (map, mask)) in maps.iter().zip(masks).enumerate() {
        let labels = brute_regions(mask, width, height);
        for (p, &l) in labels.iter().enumerate() {
            if l == 0 {
                normal.push(map[p]);
            } else {
                regions.entry((image, l)).or_default().push(map[p]);
            }
        }
    }
    let all: Vec<f32> = maps.iter().flatten().copied().collect();
    let mut curve = vec![(0.0, 0.0)];
    for t in thresholds(&all) {
        let fpr = normal.iter().filter(|&&s| s >= t).count() as f64 / normal.len() as f64;
        let pro = regions
            .values()
            .map(|r| r.iter().filter(|&&s| s >= t).count() as f64 / r.len() as f64)
            .sum::<f64>()
            / regions.len() as f64;
        curve.push((fpr, pro));
    }
    curve.push((1.0, 1.0));
    let mut area = 0.0;
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x1 <= limit {
            area += 0.5 * (y0 + y1) * (x1 - x0);
        } else {
            let y = y0 + (y1 - y0) * (limit - x0) / (x1 - x0);
            area += 0.5 * (y0 + y) * (limit - x0);
            break;
        }
    }
    area / limit
}

/// 1 to 3 images of up to 9x9 pixels with random masks (at least one defect
/// pixel and one normal pixel overall) and quantised maps.
fn images_case() -> impl Strategy<Value = (usize, usize, Vec<Vec<f32>>, Vec<Vec<bool>>)> {
    (2usize..9, 2usize..9, 1usize..4).prop_flat_map(|(w, h, n)| {
        (
            prop::collection::vec(prop::collection::vec(0u8..6, w * h), n),
            prop::collection::vec(prop::collection::vec(prop::bool::weighted(0.3), w * h), n),
        )
            .prop_map(move |(levels, mut masks)| {
                masks[0][0] = true;
                masks[0][1] = false;
                let maps = levels
                    .iter()
                    .zip(&masks)
                    .map(|(l, m)| {
                        l.iter()
                            .zip(m)
                            .map(|(&v, &d)| f32::from(v) + if d { 1.5 } else { 0.0 })
                            .collect()
                    })
                    .collect();
                (w, h, maps, masks)
            })
    })
}

fn refs<T>(v: &[Vec<T>]) -> Vec<&[T]> {
    v.iter().map(Vec::as_slice).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn auroc_matches_pair_counting((scores, labels) in any_case()) {
        let got = auroc(&scores, &labels).unwrap();
        prop_assert!((got - brute_auroc(&scores, &labels)).abs() < 1e-12);
        prop_assert!((0.0..=1.0).contains(&got));
    }

    #[test]
    fn ap_and_f1_match_threshold_by_threshold_definition((scores, labels) in any_case()) {
        let m = classification_metrics(&scores, &labels).unwrap();
        prop_assert!((m.average_precision - brute_ap(&scores, &labels)).abs() < 1e-12);
        prop_assert!((m.f1_max.f1 - brute_f1(&scores, &labels)).abs() < 1e-12);
        // The reported threshold reaches the reported F1.
        let positives = labels.iter().filter(|&&l| l).count() as f64;
        let (tp, fp) = counts_at(&scores, &labels, m.f1_max.threshold);
        prop_assert!((2.0 * tp / (tp + fp + positives) - m.f1_max.f1).abs() < 1e-12);
    }

    #[test]
    fn negating_scores_flips_auroc((scores, labels) in any_case()) {
        let negated: Vec<f32> = scores.iter().map(|s| -s).collect();
        let a = auroc(&scores, &labels).unwrap();
        let b = auroc(&negated, &labels).unwrap();
        prop_assert!((a + b - 1.0).abs() < 1e-12);
    }

    #[test]
    fn strictly_increasing_maps_change_nothing((scores, labels) in tied_case()) {
        // k -> k^3 + 3k - 40 is strictly increasing and exact in f32 for k < 12.
        let g = |s: f32| s * s * s + 3.0 * s - 40.0;
        let mapped: Vec<f32> = scores.iter().map(|&s| g(s)).collect();
        let a = classification_metrics(&scores, &labels).unwrap();
        let b = classification_metrics(&mapped, &labels).unwrap();
        prop_assert_eq!(a.auroc, b.auroc);
        prop_assert_eq!(a.average_precision, b.average_precision);
        prop_assert_eq!(a.f1_max.f1, b.f1_max.f1);
        prop_assert_eq!(g(a.f1_max.threshold), b.f1_max.threshold);
    }

    #[test]
    fn bounds_that_hold((scores, labels) in any_case()) {
        let m = classification_metrics(&scores, &labels).unwrap();
        let p = labels.iter().filter(|&&l| l).count() as f64;
        let n = labels.len() as f64 - p;
        let worst_ap = (1..=p as usize).map(|i| i as f64 / (n + i as f64)).sum::<f64>() / p;
        prop_assert!(m.average_precision <= 1.0 + 1e-15);
        prop_assert!(m.average_precision >= worst_ap - 1e-12);
        // Flagging everything gives F1 = 2P / (2P + N); the best is no worse.
        prop_assert!(m.f1_max.f1 >= 2.0 * p / (2.0 * p + n) - 1e-12);
        prop_assert!(m.f1_max.f1 <= 1.0);
        // Perfect separation <=> AUROC = 1 <=> AP = 1.
        let min_pos = scores.iter().zip(&labels).filter(|(_, &l)| l).map(|(&s, _)| s).fold(f32::INFINITY, f32::min);
        let max_neg = scores.iter().zip(&labels).filter(|(_, &l)| !l).map(|(&s, _)| s).fold(f32::NEG_INFINITY, f32::max);
        let separated = min_pos > max_neg;
        prop_assert_eq!(separated, m.auroc == 1.0);
        prop_assert_eq!(separated, (m.average_precision - 1.0).abs() < 1e-15);
    }

    #[test]
    fn all_tied_gives_chance_values(labels in prop::collection::vec(any::<bool>(), 2..200), level in -5.0f32..5.0) {
        let mut labels = labels;
        labels[0] = true;
        labels[1] = false;
        let scores = vec![level; labels.len()];
        let rate = labels.iter().filter(|&&l| l).count() as f64 / labels.len() as f64;
        prop_assert_eq!(auroc(&scores, &labels).unwrap(), 0.5);
        prop_assert!((average_precision(&scores, &labels).unwrap() - rate).abs() < 1e-15);
        let f1 = f1_max(&scores, &labels).unwrap();
        prop_assert_eq!(f1.threshold, level);
    }

    #[test]
    fn order_of_samples_does_not_matter((scores, labels) in any_case()) {
        let rev_scores: Vec<f32> = scores.iter().rev().copied().collect();
        let rev_labels: Vec<bool> = labels.iter().rev().copied().collect();
        prop_assert_eq!(
            classification_metrics(&scores, &labels).unwrap(),
            classification_metrics(&rev_scores, &rev_labels).unwrap()
        );
    }

    #[test]
    fn aupro_matches_definition_and_streaming((w, h, maps, masks) in images_case(), limit in prop_oneof![Just(0.3), Just(1.0), 0.01f64..1.0]) {
        let negatives = masks.iter().flatten().filter(|&&m| !m).count();
        prop_assume!(negatives > 0);
        let got = aupro(&refs(&maps), &refs(&masks), w, h, limit).unwrap();
        let expected = brute_aupro(&maps, &masks, w, h, limit);
        prop_assert!((got - expected).abs() < 1e-9, "{} vs {}", got, expected);
        prop_assert!((-1e-12..=1.0 + 1e-12).contains(&got));
        let mut pixels = PixelMetrics::with_fpr_limit(limit).unwrap();
        for (map, mask) in maps.iter().zip(&masks) {
            pixels.update(map, mask, w, h).unwrap();
        }
        let report = pixels.finish().unwrap();
        // Same value; the free function sweeps only the pixels above the
        // limit, so the last rounding may differ.
        prop_assert!((report.aupro - got).abs() < 1e-12);
        let all_scores: Vec<f32> = maps.iter().flatten().copied().collect();
        let all_labels: Vec<bool> = masks.iter().flatten().copied().collect();
        let flat = classification_metrics(&all_scores, &all_labels).unwrap();
        prop_assert_eq!(report.auroc, flat.auroc);
        prop_assert_eq!(report.average_precision, flat.average_precision);
        prop_assert_eq!(report.f1_max, flat.f1_max);
        // A strictly increasing map of the scores leaves AU-PRO unchanged.
        let squashed: Vec<Vec<f32>> = maps.iter().map(|m| m.iter().map(|&s| 2.0 * s - 3.0).collect()).collect();
        prop_assert!((aupro(&refs(&squashed), &refs(&masks), w, h, limit).unwrap() - got).abs() < 1e-12);
        // The ground truth itself as the map is perfect.
        let perfect: Vec<Vec<f32>> = masks.iter().map(|m| m.iter().map(|&d| f32::from(u8::from(d))).collect()).collect();
        prop_assert!((aupro(&refs(&perfect), &refs(&masks), w, h, limit).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn image_score_bounds(w in 1usize..20, h in 1usize..20, k in 1usize..25, seed in prop::collection::vec(0.0f32..1.0, 400)) {
        let map: Vec<f32> = seed[..w * h].to_vec();
        let score = image_score(&map, w, h, k).unwrap();
        let max = map.iter().copied().fold(0.0f32, f32::max);
        // Non-negative maps: the mean never exceeds the max, and the window
        // centred on the max holds it at least once.
        prop_assert!(score <= max + 1e-6);
        prop_assert!(score >= max / (k * k) as f32 - 1e-6);
        // A constant map scores the constant when a full window fits.
        if k <= w.min(h) {
            let flat = vec![0.7f32; w * h];
            prop_assert!((image_score(&flat, w, h, k).unwrap() - 0.7).abs() < 1e-6);
        }
    }

    #[test]
    fn psnr_is_symmetric(a in prop::collection::vec(0.0f32..1.0, 12), b in prop::collection::vec(0.0f32..1.0, 12), mask in prop::collection::vec(any::<bool>(), 4)) {
        prop_assume!(mask.iter().any(|&m| m));
        let ab = psnr(&a, &b, &mask).unwrap();
        prop_assert_eq!(ab, psnr(&b, &a, &mask).unwrap());
        prop_assert!(ab > 0.0);
    }
}
