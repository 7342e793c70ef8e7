//! The shared core: samples packed into `u64`s, sorted once by descending
//! score with a radix sort, then swept once to produce every curve metric.
//!
//! Packing (one `u64` per sample, 8 bytes):
//!
//! ```text
//! bits 63..32  descending score key (order-reversed f32 bit pattern)
//! bits 31..24  group: defect type (0 = untyped)
//! bits 23..0   region: 0 = negative (normal), r >= 1 = positive sample of
//!              ground-truth region r - 1 (classification inputs use r = 1)
//! ```
//!
//! Sorting the packed words in ascending order of their upper 32 bits sorts
//! the samples by descending score. Equal scores give equal keys (`-0.0` is
//! folded onto `+0.0`), so the sweep sees each tie group as one threshold,
//! exactly like scikit-learn's `_binary_clf_curve` and the MVTec AD
//! `compute_pro`, which both merge points "that occur together at the same
//! threshold".

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The best F1 score over all thresholds and the threshold that reaches it
/// (anomalib's `F1Max`, built on scikit-learn's `precision_recall_curve`).
///
/// A sample is predicted anomalous when `score >= threshold`; the thresholds
/// tried are the distinct scores. `F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN)`.
/// When several thresholds reach the same F1 the lowest one is reported, as
/// `argmax` over the ascending threshold list of anomalib does.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct F1Max {
    /// The best F1 score, in `(0, 1]`.
    pub f1: f64,
    /// The score threshold that reaches it.
    pub threshold: f32,
}

/// Bits of the region field.
pub(crate) const REGION_BITS: u32 = 24;
/// Mask of the region field.
pub(crate) const REGION_MASK: u32 = (1 << REGION_BITS) - 1;
/// Largest number of ground-truth regions one evaluation can hold.
pub const MAX_REGIONS: usize = REGION_MASK as usize;
/// Largest number of defect types (groups) one evaluation can hold; group 0
/// is reserved for samples given without a type.
pub const MAX_GROUPS: usize = 255;

/// Order-reversing key of a finite score: `a > b` iff `key(a) < key(b)`,
/// `a == b` iff `key(a) == key(b)`.
#[inline]
pub(crate) fn descending_key(score: f32) -> u32 {
    // `-0.0 + 0.0 == +0.0`: both zeros must share one key, as they compare
    // equal in NumPy and so form one threshold there.
    let bits = (score + 0.0).to_bits();
    let ascending = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

/// Inverse of [`descending_key`].
#[inline]
pub(crate) fn score_of_key(key: u32) -> f32 {
    let ascending = !key;
    let bits = if ascending & 0x8000_0000 != 0 {
        ascending & 0x7fff_ffff
    } else {
        !ascending
    };
    f32::from_bits(bits)
}

/// Packs one sample.
#[inline]
pub(crate) fn pack(score: f32, group: u8, region: u32) -> u64 {
    (u64::from(descending_key(score)) << 32) | (u64::from(group) << REGION_BITS) | u64::from(region)
}

#[inline]
fn key_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// Below this many elements a comparison sort beats the radix sort's set-up.
const SMALL_SORT: usize = 1 << 12;
/// Digit width of the first, most-significant pass over the whole array:
/// 2048 buckets keep the scattered writes cache- and TLB-friendly.
const MSD_BITS: u32 = 11;
/// Widest digit of the passes inside one (cache-resident) bucket: small
/// count arrays, cheap to clear for every bucket.
const LSD_BITS: u32 = 8;

/// Sorts packed samples by descending score (ascending key), in place.
///
/// Only the key bits in which keys differ are sorted (scores in `[0, 1]`
/// share their top bits). A most-significant-digit pass on the top 11 of
/// these bits splits the data into up to 2048 buckets, which are then
/// finished independently (in parallel, with rayon) by least-significant-
/// digit passes of at most 8 bits on the remaining bits, while each bucket
/// sits in cache; passes in which all elements share a digit are skipped. Elements
/// with equal keys end up in arbitrary order (the sweep does not need more).
pub(crate) fn sort_descending(data: &mut [u64]) {
    let n = data.len();
    if n <= SMALL_SORT {
        data.sort_unstable_by_key(|&w| key_of(w));
        return;
    }
    let (min, max) = data
        .par_chunks(1 << 16)
        .map(|chunk| {
            chunk.iter().fold((u32::MAX, 0u32), |(lo, hi), &w| {
                let k = key_of(w);
                (lo.min(k), hi.max(k))
            })
        })
        .reduce(|| (u32::MAX, 0), |a, b| (a.0.min(b.0), a.1.max(b.1)));
    let differing = min ^ max;
    if differing == 0 {
        return;
    }
    // Only bits [0, significant) of the key vary.
    let significant = 32 - differing.leading_zeros();
    let msd_bits = significant.min(MSD_BITS);
    let msd_shift = significant - msd_bits;
    let msd_mask = (1u32 << msd_bits) - 1;
    let digit = |w: u64| ((key_of(w) >> msd_shift) & msd_mask) as usize;

    let buckets = 1usize << msd_bits;
    // The MSD pass is parallel too: the array is cut into parts, each part
    // is scattered into the same range of `scratch` by its own counts, and a
    // bucket is then the union of its pieces in every part.
    let part_len = n.div_ceil(rayon::current_num_threads().clamp(1, 16));
    let part_counts: Vec<Vec<usize>> = data
        .par_chunks(part_len)
        .map(|part| {
            let mut hist = vec![0usize; buckets];
            for &w in part {
                hist[digit(w)] += 1;
            }
            hist
        })
        .collect();
    let mut scratch = vec![0u64; n];
    scratch
        .par_chunks_mut(part_len)
        .zip(data.par_chunks(part_len))
        .zip(part_counts.par_iter())
        .for_each(|((out, part), hist)| {
            let mut offsets = Vec::with_capacity(buckets);
            let mut running = 0;
            for &c in hist {
                offsets.push(running);
                running += c;
            }
            for &w in part {
                let d = digit(w);
                out[offsets[d]] = w;
                offsets[d] += 1;
            }
        });
    // Pieces of every bucket, part by part, and the bucket's final place.
    let mut pieces: Vec<Vec<&[u64]>> = (0..buckets).map(|_| Vec::new()).collect();
    for (part, hist) in scratch.chunks(part_len).zip(&part_counts) {
        let mut rest = part;
        for (bucket, &c) in hist.iter().enumerate() {
            let (piece, tail) = rest.split_at(c);
            if c > 0 {
                pieces[bucket].push(piece);
            }
            rest = tail;
        }
    }
    let mut jobs = Vec::with_capacity(buckets);
    let mut rest = &mut data[..];
    for sources in pieces {
        let len = sources.iter().map(|p| p.len()).sum();
        let (dst, tail) = rest.split_at_mut(len);
        if len > 0 {
            jobs.push((sources, dst));
        }
        rest = tail;
    }
    let lsd_passes = msd_shift.div_ceil(LSD_BITS);
    jobs.into_par_iter().with_min_len(16).for_each_init(
        || (Vec::new(), Vec::new()),
        |(hist, tmp), (sources, dst)| lsd_sort(&sources, dst, msd_shift, lsd_passes, hist, tmp),
    );
}

/// Sorts the concatenation of `sources` by key bits `[0, bits)` with up to
/// `passes` LSD radix passes into `dst`. `hist` and `tmp` are reusable
/// scratch (digit counts and a ping-pong buffer).
fn lsd_sort(
    sources: &[&[u64]],
    dst: &mut [u64],
    bits: u32,
    passes: u32,
    hist: &mut Vec<u32>,
    tmp: &mut Vec<u64>,
) {
    let mut filled = 0;
    // Small buckets: a comparison sort is cheaper than clearing the counts.
    if dst.len() <= 256 || bits == 0 {
        for piece in sources {
            dst[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        }
        if bits > 0 {
            dst.sort_unstable_by_key(|&w| key_of(w));
        }
        return;
    }
    let width = bits.div_ceil(passes);
    let radix = 1usize << width;
    let mask = radix - 1;
    hist.clear();
    hist.resize(passes as usize * radix, 0);
    for piece in sources {
        for &w in piece.iter() {
            let k = key_of(w);
            for p in 0..passes {
                let d = ((k >> (p * width)) as usize) & mask;
                hist[p as usize * radix + d] += 1;
            }
        }
    }
    // Passes in which every element has the same digit change nothing.
    let active: Vec<u32> = (0..passes)
        .filter(|&p| {
            let h = &hist[p as usize * radix..(p as usize + 1) * radix];
            !h.iter().any(|&c| c as usize == dst.len())
        })
        .collect();
    if active.is_empty() {
        for piece in sources {
            dst[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        }
        return;
    }
    tmp.clear();
    tmp.resize(dst.len(), 0);
    // Alternate between `dst` and `tmp` so that the last pass writes `dst`.
    let mut into_dst = active.len() % 2 == 1;
    for (i, &p) in active.iter().enumerate() {
        let h = &mut hist[p as usize * radix..(p as usize + 1) * radix];
        if i == 0 {
            let words = sources.iter().flat_map(|piece| piece.iter().copied());
            let to: &mut [u64] = if into_dst { dst } else { tmp };
            scatter_pass(words, to, h, p * width, mask);
        } else if into_dst {
            scatter_pass(tmp.iter().copied(), dst, h, p * width, mask);
        } else {
            scatter_pass(dst.iter().copied(), tmp, h, p * width, mask);
        }
        into_dst = !into_dst;
    }
}

/// One counting-sort pass: `h` holds the digit counts on entry.
fn scatter_pass(
    words: impl Iterator<Item = u64>,
    to: &mut [u64],
    h: &mut [u32],
    shift: u32,
    mask: usize,
) {
    let mut running = 0u32;
    for c in h.iter_mut() {
        let count = *c;
        *c = running;
        running += count;
    }
    for w in words {
        let d = ((key_of(w) >> shift) as usize) & mask;
        to[h[d] as usize] = w;
        h[d] += 1;
    }
}

/// Which samples a sweep looks at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Subset {
    /// Every sample.
    All,
    /// Samples of group `a` or group `b` (the "good" images plus one defect
    /// type).
    Groups(u8, u8),
}

impl Subset {
    #[inline]
    fn accepts(self, tag: u32) -> bool {
        match self {
            Subset::All => true,
            Subset::Groups(a, b) => {
                let g = (tag >> REGION_BITS) as u8;
                g == a || g == b
            }
        }
    }
}

/// What the AU-PRO part of a sweep needs.
pub(crate) struct ProSpec<'a> {
    /// `1 / |region|` for every ground-truth region, by region index.
    pub inverse_region_size: &'a [f64],
    /// Number of regions in the swept subset.
    pub regions: usize,
    /// Integration limit on the false-positive rate, in `(0, 1]`.
    pub fpr_limit: f64,
}

/// Metrics produced by one sweep.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SweepOutput {
    pub auroc: f64,
    pub average_precision: f64,
    pub f1_max: F1Max,
    pub aupro: Option<f64>,
}

/// Walks the sorted samples once, threshold by threshold (one threshold per
/// distinct score, highest first), and integrates the ROC, precision-recall
/// and PRO curves. `positives`/`negatives` are the class counts of the
/// subset; both must be non-zero (checked by the callers).
pub(crate) fn sweep(
    sorted: &[u64],
    subset: Subset,
    positives: u64,
    negatives: u64,
    pro: Option<ProSpec<'_>>,
) -> SweepOutput {
    // Monomorphise the per-sample filter so the unfiltered sweep pays nothing.
    match subset {
        Subset::All => sweep_with(sorted, |_| true, positives, negatives, pro),
        Subset::Groups(..) => {
            sweep_with(sorted, |tag| subset.accepts(tag), positives, negatives, pro)
        }
    }
}

/// The PRO curve integrated so far (MVTec AD `trapezoid(..., x_max)`).
struct ProCurve<'a> {
    spec: ProSpec<'a>,
    inverse_negatives: f64,
    /// Sum over counted region pixels of `1 / |region|`.
    cumulative: f64,
    /// The last curve point.
    fpr: f64,
    pro: f64,
    area: f64,
    /// Set once the curve has passed `fpr_limit`.
    done: bool,
}

impl ProCurve<'_> {
    /// Extends the curve to `(fpr, pro)` with a trapezoid, clipping it at the
    /// limit with linear interpolation.
    fn step(&mut self, fpr: f64, pro: f64) {
        let limit = self.spec.fpr_limit;
        if fpr <= limit {
            self.area += 0.5 * (pro + self.pro) * (fpr - self.fpr);
            self.fpr = fpr;
            self.pro = pro;
        } else {
            let at_limit = self.pro + (pro - self.pro) * (limit - self.fpr) / (fpr - self.fpr);
            self.area += 0.5 * (at_limit + self.pro) * (limit - self.fpr);
            self.done = true;
        }
    }

    /// Adds the curve points up to and including a threshold that brought
    /// `dpro` more region coverage, `fp_before` normal pixels before it and
    /// `fp_after` after it. Thresholds that only add normal pixels are not
    /// visited one by one: they all lie on the horizontal segment from the
    /// last point to `(fp_before / N, last PRO)`, which is added in one step
    /// (the same area as one trapezoid per point).
    fn threshold(&mut self, fp_before: u64, fp_after: u64, dpro: f64) {
        if self.done {
            return;
        }
        let pro = self.pro;
        self.step(fp_before as f64 * self.inverse_negatives, pro);
        if self.done {
            return;
        }
        self.cumulative += dpro;
        let pro = (self.cumulative / self.spec.regions as f64).min(1.0);
        self.step(fp_after as f64 * self.inverse_negatives, pro);
    }

    /// Closes the curve: the horizontal segment to the last threshold's FPR
    /// (`fp` normal pixels counted), then the MVTec end point `(1, 1)`, and
    /// normalises by the limit. When the swept samples are only the
    /// highest-scoring prefix of all samples (see [`crate::aupro`]), the
    /// prefix reaches past the limit, so the end point is never used.
    fn finish(mut self, fp: u64) -> f64 {
        if !self.done {
            let pro = self.pro;
            self.step(fp as f64 * self.inverse_negatives, pro);
        }
        if !self.done {
            self.step(1.0, 1.0);
        }
        self.area / self.spec.fpr_limit
    }
}

fn sweep_with(
    sorted: &[u64],
    accepts: impl Fn(u32) -> bool,
    positives: u64,
    negatives: u64,
    pro: Option<ProSpec<'_>>,
) -> SweepOutput {
    debug_assert!(positives > 0 && negatives > 0);
    let n = sorted.len();
    let (mut tp, mut fp) = (0u64, 0u64);
    // Twice the ROC area in units of 1 / (P N): sum of dFP (TP_prev + TP).
    let mut roc_area2: u128 = 0;
    // Sum over thresholds of dTP x precision (AP = this / P).
    let mut ap_sum = 0.0f64;
    // Best F1 = 2 TP / (TP + FP + P), kept as an exact fraction. F1 can only
    // rise at a threshold that adds positives, so only those are candidates.
    let (mut best_num, mut best_den, mut best_key) = (0u64, 1u64, 0u32);
    let with_pro = pro.is_some();
    let mut curve = pro.map(|spec| ProCurve {
        spec,
        inverse_negatives: 1.0 / negatives as f64,
        cumulative: 0.0,
        fpr: 0.0,
        pro: 0.0,
        area: 0.0,
        done: false,
    });

    let mut i = 0;
    while i < n {
        let key = key_of(sorted[i]);
        let (mut dtp, mut dfp) = (0u64, 0u64);
        let mut dpro = 0.0f64;
        while i < n && key_of(sorted[i]) == key {
            let tag = sorted[i] as u32;
            i += 1;
            if !accepts(tag) {
                continue;
            }
            let region = tag & REGION_MASK;
            if region == 0 {
                dfp += 1;
            } else {
                dtp += 1;
                if with_pro {
                    if let Some(c) = &curve {
                        dpro += c.spec.inverse_region_size[(region - 1) as usize];
                    }
                }
            }
        }
        if dtp == 0 {
            // Only normal samples (or none of the subset) at this threshold.
            roc_area2 += u128::from(dfp) * u128::from(2 * tp);
            fp += dfp;
            continue;
        }
        roc_area2 += u128::from(dfp) * u128::from(2 * tp + dtp);
        if let Some(c) = &mut curve {
            c.threshold(fp, fp + dfp, dpro);
        }
        tp += dtp;
        fp += dfp;
        ap_sum += dtp as f64 * (tp as f64 / (tp + fp) as f64);
        // `>=` keeps the lowest threshold among equal F1 values, like
        // `argmax` over anomalib's/scikit-learn's ascending threshold list.
        let (num, den) = (2 * tp, tp + fp + positives);
        if u128::from(num) * u128::from(best_den) >= u128::from(best_num) * u128::from(den) {
            (best_num, best_den, best_key) = (num, den, key);
        }
    }
    SweepOutput {
        auroc: roc_area2 as f64 / (2.0 * positives as f64 * negatives as f64),
        average_precision: ap_sum / positives as f64,
        f1_max: F1Max {
            f1: best_num as f64 / best_den as f64,
            threshold: score_of_key(best_key),
        },
        aupro: curve.map(|c| c.finish(fp)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_matches_float_order() {
        let values = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            -0.0,
            0.0,
            1e-38,
            0.25,
            0.5,
            1.0,
            7e30,
            f32::INFINITY,
        ];
        for &a in &values {
            assert_eq!(score_of_key(descending_key(a)), a + 0.0);
            for &b in &values {
                let (ka, kb) = (descending_key(a), descending_key(b));
                assert_eq!(a > b, ka < kb, "{a} vs {b}");
                assert_eq!(a == b, ka == kb, "{a} vs {b}");
            }
        }
    }

    fn check_sort(mut data: Vec<u64>) {
        let mut expected: Vec<u32> = data.iter().map(|&w| key_of(w)).collect();
        expected.sort_unstable();
        let mut words = data.clone();
        words.sort_unstable();
        sort_descending(&mut data);
        let keys: Vec<u32> = data.iter().map(|&w| key_of(w)).collect();
        assert_eq!(keys, expected);
        // Same multiset of words: nothing lost or duplicated.
        data.sort_unstable();
        assert_eq!(data, words);
    }

    #[test]
    fn radix_sort_sorts_wide_and_narrow_keys() {
        // A small deterministic generator (xorshift) is enough here.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let wide: Vec<u64> = (0..600_000).map(|_| next()).collect();
        check_sort(wide);
        let unit: Vec<u64> = (0..300_000)
            .map(|i| pack((next() % 1_000_000) as f32 / 1e6, 0, (i % 3) as u32))
            .collect();
        check_sort(unit);
        let ties: Vec<u64> = (0..20_000)
            .map(|i| pack((next() % 5) as f32, 1, (i % 2) as u32))
            .collect();
        check_sort(ties);
        let constant: Vec<u64> = (0..10_000).map(|i| pack(0.5, 0, i)).collect();
        check_sort(constant);
    }
}
