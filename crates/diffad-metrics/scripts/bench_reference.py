#!/usr/bin/env python3
"""Python baselines for benches/metrics.rs (figures in docs/benchmarks.md).

Same workload as the criterion bench: 100 anomaly maps of 256x256 (6.55 M
pixels), half of the images with 1-3 elliptic defects covering ~6 % of
their pixels (~3 % overall), continuous float32 scores in [0, 1] that are
higher inside defects. (Generated with NumPy, so the pixels are not
bit-identical to the Rust bench's ChaCha stream, but size, positive rate,
score distribution and tie structure match.)

Timed over --repeats runs each (best and mean printed):
- scikit-learn roc_auc_score + average_precision_score on the flat pixels;
- AU-PRO (FPR limit 0.3) with the MVTec AD evaluation script's algorithm:
  compute_pro (scipy.ndimage.label with a 3x3 structure, uint32 FP changes,
  float64 PRO changes, one argsort) followed by trapezoid up to 0.3. This is
  a line-for-line reimplementation with the official dtypes.

Usage: python3 crates/diffad-metrics/scripts/bench_reference.py [--repeats 3]
Threads: OMP/MKL/OpenBLAS limited to 2 (the VM's nproc) before NumPy loads.
"""

import argparse
import os
import time
from bisect import bisect

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "2")

import numpy as np  # noqa: E402
from scipy.ndimage import label  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

IMAGES, SIZE = 100, 256


def synthetic(images=IMAGES, size=SIZE):
    maps, masks = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(images):
        rng = np.random.default_rng(0xD1FFAD00 + i)
        mask = np.zeros((size, size), dtype=bool)
        if i % 2 == 1:
            target = size * size * 6 // 100
            defects = int(rng.integers(1, 4))
            for _ in range(defects):
                area = target / defects
                aspect = rng.uniform(0.4, 2.5)
                a = np.sqrt(area / np.pi * aspect)
                b = area / np.pi / a
                cx, cy = rng.uniform(0.2, 0.8, 2) * size
                mask |= ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0
        noise = rng.random((size, size, 3), dtype=np.float32).mean(axis=2)
        maps.append(np.clip(0.7 * noise + 0.25 * mask, 0, 1).astype(np.float32))
        masks.append(mask)
    return maps, masks


# --- MVTec AD evaluation code (pro_curve_util.compute_pro, generic_util.trapezoid) ---

def compute_pro(anomaly_maps, ground_truth_maps):
    structure = np.ones((3, 3), dtype=int)
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = (len(anomaly_maps), anomaly_maps[0].shape[0], anomaly_maps[0].shape[1])
    fp_changes = np.zeros(shape, dtype=np.uint32)
    pro_changes = np.zeros(shape, dtype=np.float64)
    for gt_ind, gt_map in enumerate(ground_truth_maps):
        labeled, n_components = label(gt_map, structure)
        num_gt_regions += n_components
        ok_mask = labeled == 0
        num_ok_pixels += np.sum(ok_mask)
        fp_changes[gt_ind, ok_mask] = 1
        for k in range(n_components):
            region_mask = labeled == (k + 1)
            region_size = np.sum(region_mask)
            pro_changes[gt_ind, region_mask] = 1.0 / region_size
    anomaly_scores_flat = np.array(anomaly_maps).ravel()
    fp_changes_flat = fp_changes.ravel()
    pro_changes_flat = pro_changes.ravel()
    sort_idxs = np.argsort(anomaly_scores_flat).astype(np.uint32)[::-1]
    np.take(anomaly_scores_flat, sort_idxs, out=anomaly_scores_flat)
    anomaly_scores_sorted = anomaly_scores_flat
    np.take(fp_changes_flat, sort_idxs, out=fp_changes_flat)
    fp_changes_sorted = fp_changes_flat
    np.take(pro_changes_flat, sort_idxs, out=pro_changes_flat)
    pro_changes_sorted = pro_changes_flat
    del sort_idxs
    np.cumsum(fp_changes_sorted, out=fp_changes_sorted)
    fp_changes_sorted = fp_changes_sorted.astype(np.float32, copy=False)
    np.divide(fp_changes_sorted, num_ok_pixels, out=fp_changes_sorted)
    fprs = fp_changes_sorted
    np.cumsum(pro_changes_sorted, out=pro_changes_sorted)
    np.divide(pro_changes_sorted, num_gt_regions, out=pro_changes_sorted)
    pros = pro_changes_sorted
    keep_mask = np.append(np.diff(anomaly_scores_sorted) != 0, np.True_)
    del anomaly_scores_sorted
    fprs = fprs[keep_mask]
    pros = pros[keep_mask]
    del keep_mask
    np.clip(fprs, a_min=None, a_max=1.0, out=fprs)
    np.clip(pros, a_min=None, a_max=1.0, out=pros)
    zero = np.array([0.0])
    one = np.array([1.0])
    return np.concatenate((zero, fprs, one)), np.concatenate((zero, pros, one))


def trapezoid(x, y, x_max=None):
    x = np.array(x)
    y = np.array(y)
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x, x_max)
            assert 0 < ins < len(x)
            y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]))
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x = x[mask]
        y = y[mask]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def timed(repeats, fn):
    """(best, mean) wall time in seconds over `repeats` runs, and the value."""
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), sum(times) / len(times), value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    maps, masks = synthetic()
    scores = np.concatenate([m.ravel() for m in maps])
    labels = np.concatenate([m.ravel() for m in masks])
    print(f"{scores.size} pixels, {100 * labels.mean():.2f} % anomalous")

    best, mean, (auc, ap) = timed(args.repeats, lambda: (roc_auc_score(labels, scores),
                                                         average_precision_score(labels, scores)))
    print(f"sklearn roc_auc_score + average_precision_score: best {best * 1e3:.0f} ms, "
          f"mean {mean * 1e3:.0f} ms (AUROC {auc:.6f}, AP {ap:.6f})")
    best, mean, pro = timed(args.repeats,
                            lambda: trapezoid(*compute_pro(maps, masks), x_max=0.3) / 0.3)
    print(f"MVTec AD compute_pro + trapezoid (NumPy/SciPy): best {best * 1e3:.0f} ms, "
          f"mean {mean * 1e3:.0f} ms (AU-PRO {pro:.6f})")


if __name__ == "__main__":
    main()
