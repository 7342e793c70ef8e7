#!/usr/bin/env python3
"""Reference values for diffad-metrics' tests.

Writes small JSON fixtures to ../tests/fixtures/ (committed; the Rust tests
read them, so CI needs no Python):

- classification.json: scikit-learn roc_auc_score, average_precision_score and
  the F1-max of precision_recall_curve (as anomalib's F1Max) on heavy ties,
  all-tied scores, inverted scores, signed zeros, large magnitudes and several
  random cases.
- aupro.json: AU-PRO by a NumPy/SciPy implementation of the MVTec AD
  definition (the structure of the MVTec AD evaluation script's compute_pro and
  trapezoid, in float64; 8-connected regions from scipy.ndimage.label with a
  3x3 structure), plus scikit-learn pixel AUROC/AP/F1-max on the same pixels.
  Cases include diagonal-only-connected regions, quantised (tied) maps,
  inverted maps and a limit that hits an FPR point exactly.
- image_score.json: max(torch.nn.functional.avg_pool2d(map, k, 1, k // 2)) with
  count_include_pad=True, for odd and even k including DRAEM's k = 21.
- evaluator.json: a whole category (image and pixel level, per defect type:
  each defect type together with the "good" images).

Run from anywhere:  python3 crates/diffad-metrics/scripts/make_fixtures.py
Needs numpy, scipy, scikit-learn and torch (CPU).
"""

import json
import os
from bisect import bisect

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, label
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

torch.set_num_threads(1)
torch.manual_seed(0)
RNG = np.random.default_rng(20231001)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def f32_list(values):
    """float32 values as their shortest round-trip decimal strings (as JSON numbers)."""
    return [float(str(np.float32(v))) for v in np.asarray(values, dtype=np.float32).ravel()]


def f1_max(labels, scores):
    """anomalib F1Max: argmax of 2PR/(P+R) over precision_recall_curve (ascending thresholds)."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)[:-1]
    best = int(np.argmax(f1))
    unique = int(np.sum(f1 >= f1[best] - 1e-12)) == 1
    return float(f1[best]), float(thresholds[best]), unique


def classification_case(name, scores, labels):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=bool)
    f1, threshold, unique = f1_max(labels, scores)
    return {
        "name": name,
        "scores": f32_list(scores),
        "labels": [int(v) for v in labels],
        "auroc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "f1": f1,
        "f1_threshold": threshold,
        "f1_unique": unique,
    }


# --- MVTec AD AU-PRO definition (structure of the official compute_pro), float64 ---

def compute_pro(anomaly_maps, ground_truth_maps):
    structure = np.ones((3, 3), dtype=int)  # 8-connectivity
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = (len(anomaly_maps), anomaly_maps[0].shape[0], anomaly_maps[0].shape[1])
    fp_changes = np.zeros(shape, dtype=np.float64)
    pro_changes = np.zeros(shape, dtype=np.float64)
    for gt_ind, gt_map in enumerate(ground_truth_maps):
        labeled, n_components = label(gt_map, structure)
        num_gt_regions += n_components
        ok_mask = labeled == 0
        num_ok_pixels += np.sum(ok_mask)
        fp_changes[gt_ind, ok_mask] = 1
        for k in range(n_components):
            region_mask = labeled == (k + 1)
            pro_changes[gt_ind, region_mask] = 1.0 / np.sum(region_mask)
    scores = np.array(anomaly_maps, dtype=np.float64).ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(fp_changes.ravel()[order]) / num_ok_pixels
    pros = np.cumsum(pro_changes.ravel()[order]) / num_gt_regions
    # Merge (FPR, PRO) points that occur together at the same threshold.
    keep = np.append(np.diff(scores) != 0, np.True_)
    fprs = np.clip(fprs[keep], None, 1.0)
    pros = np.clip(pros[keep], None, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def trapezoid(x, y, x_max):
    x = np.asarray(x)
    y = np.asarray(y)
    correction = 0.0
    if x_max not in x:
        ins = bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x = x[mask]
    y = y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def aupro(maps, masks, limit):
    fprs, pros = compute_pro(maps, masks)
    return trapezoid(fprs, pros, limit) / limit


def pixel_metrics(maps, masks, limits):
    scores = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    labels = np.concatenate([np.asarray(m, dtype=bool).ravel() for m in masks])
    f1, threshold, unique = f1_max(labels, scores)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "f1": f1,
        "f1_threshold": threshold,
        "f1_unique": unique,
        "aupro": [aupro([m.astype(np.float64) for m in maps], masks, lim) for lim in limits],
    }


def aupro_case(name, maps, masks, limits=(0.3, 0.05, 1.0)):
    maps = [np.asarray(m, dtype=np.float32) for m in maps]
    masks = [np.asarray(m, dtype=bool) for m in masks]
    height, width = maps[0].shape
    case = {
        "name": name,
        "width": width,
        "height": height,
        "maps": [f32_list(m) for m in maps],
        "masks": [[int(v) for v in m.ravel()] for m in masks],
        "fpr_limits": list(limits),
    }
    case.update(pixel_metrics(maps, masks, limits))
    return case


def blob_mask(height, width, fraction):
    noise = gaussian_filter(RNG.standard_normal((height, width)), sigma=2.0)
    return noise > np.quantile(noise, 1.0 - fraction)


def noisy_map(mask, separation=1.0):
    return (RNG.standard_normal(mask.shape) * 0.5 + separation * mask).astype(np.float32)


def make_classification():
    cases = [classification_case("sklearn_docstring", [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])]
    labels = RNG.random(500) < 0.3
    cases.append(classification_case(
        "heavy_ties", RNG.integers(0, 6, 500) / 10 + 0.3 * labels * (RNG.random(500) < 0.5), labels))
    labels = np.arange(40) % 3 == 0
    cases.append(classification_case("all_tied", np.full(40, 0.5), labels))
    labels = RNG.random(300) < 0.4
    scores = np.where(labels, RNG.integers(0, 4, 300), RNG.integers(3, 9, 300)) / 8
    cases.append(classification_case("inverted_with_ties", scores, labels))
    labels = RNG.random(200) < 0.5
    scores = -RNG.random(200) + labels * 0.3
    scores[:200:7] = 0.0
    scores[3:200:11] = -0.0
    cases.append(classification_case("negative_and_signed_zeros", scores, labels))
    labels = RNG.random(400) < 0.2
    cases.append(classification_case(
        "large_magnitude", RNG.standard_normal(400) * 1e4 + labels * 5e3, labels))
    for i, (n, rate, sep) in enumerate([(1000, 0.03, 1.5), (2000, 0.5, 0.5), (1500, 0.1, 0.0),
                                        (1200, 0.25, 2.5), (997, 0.7, 1.0)]):
        labels = RNG.random(n) < rate
        labels[0], labels[1] = True, False
        cases.append(classification_case(f"random_{i}", RNG.standard_normal(n) + sep * labels, labels))
    return cases


def make_aupro():
    cases = []
    # Regions connected only through corners: one staircase (one region under
    # 8-connectivity, five under 4-connectivity), a cross-shaped diagonal pair
    # and an isolated pixel.
    stair = np.zeros((12, 10), dtype=bool)
    for i in range(5):
        stair[1 + i, 1 + i] = True
    stair[8, 7] = stair[9, 8] = stair[8, 9] = True
    stair[10, 2] = True
    cases.append(aupro_case("diagonal_regions", [noisy_map(stair)], [stair]))
    maps, masks = [], []
    for _ in range(4):
        mask = blob_mask(16, 20, 0.1)
        maps.append(np.round(noisy_map(mask) * 2) / 2)
        masks.append(mask)
    maps.append(np.round(RNG.standard_normal((16, 20))) / 2)
    masks.append(np.zeros((16, 20), dtype=bool))
    cases.append(aupro_case("quantised_ties_with_normal_image", maps, masks))
    maps, masks = [], []
    for _ in range(3):
        mask = blob_mask(20, 24, 0.08)
        maps.append(-mask.astype(np.float32) + 0.01 * RNG.random(mask.shape))
        masks.append(mask)
    cases.append(aupro_case("inverted", maps, masks))
    # Limit 0.5 hits an FPR point exactly (4 normal pixels).
    map_ = np.array([[0.9, 0.8, 0.7], [0.6, 0.5, 0.4]], dtype=np.float32)
    mask = np.array([[1, 0, 0], [0, 0, 1]], dtype=bool)
    cases.append(aupro_case("limit_on_a_point", [map_], [mask], limits=(0.5, 0.25, 1.0)))
    for i in range(3):
        maps, masks = [], []
        for _ in range(4):
            mask = blob_mask(24, 24, RNG.choice([0.0, 0.03, 0.1]))
            maps.append(noisy_map(mask, separation=RNG.uniform(0.3, 2.0)))
            masks.append(mask)
        masks[0] = blob_mask(24, 24, 0.05)
        cases.append(aupro_case(f"random_{i}", maps, masks, limits=(0.3, 0.1, 0.7)))
    return cases


def torch_image_score(map_, k):
    t = torch.from_numpy(np.asarray(map_, dtype=np.float32))[None, None]
    return float(torch.nn.functional.avg_pool2d(t, k, stride=1, padding=k // 2).max())


def make_image_score():
    cases = []
    for name, (h, w) in [("landscape", (24, 40)), ("square", (32, 32)), ("tall", (30, 9))]:
        map_ = RNG.random((h, w)).astype(np.float32)
        map_[h // 3: h // 3 + 4, w // 2: w // 2 + 5] += 2.0
        kernels = [1, 2, 3, 4, 8, 21, 25]
        cases.append({
            "name": name, "width": w, "height": h, "map": f32_list(map_), "kernels": kernels,
            "scores": [torch_image_score(map_, k) for k in kernels],
        })
    # Negative map: zero padding can win the max.
    map_ = -RNG.random((10, 10)).astype(np.float32) - 0.5
    cases.append({"name": "negative", "width": 10, "height": 10, "map": f32_list(map_),
                  "kernels": [3, 21], "scores": [torch_image_score(map_, k) for k in [3, 21]]})
    return cases


def make_evaluator():
    h, w, kernel = 32, 32, 21
    types, maps, masks = [], [], []
    for defect, count, fraction in [("good", 4, 0.0), ("crack", 3, 0.03), ("hole", 3, 0.08)]:
        for _ in range(count):
            mask = blob_mask(h, w, fraction) if fraction > 0 else np.zeros((h, w), dtype=bool)
            maps.append(noisy_map(mask, RNG.uniform(0.2, 1.5)).astype(np.float32))
            masks.append(mask)
            types.append(defect)
    scores = np.array([torch_image_score(m, kernel) for m in maps], dtype=np.float32)
    labels = np.array([m.any() for m in masks])

    def image_metrics(idx):
        f1, threshold, unique = f1_max(labels[idx], scores[idx])
        return {"auroc": float(roc_auc_score(labels[idx], scores[idx])),
                "average_precision": float(average_precision_score(labels[idx], scores[idx])),
                "f1": f1, "f1_threshold": threshold, "f1_unique": unique}

    everything = list(range(len(maps)))
    per_defect = {}
    for defect in ["crack", "hole"]:
        idx = [i for i, t in enumerate(types) if t in ("good", defect)]
        per_defect[defect] = {
            "image": image_metrics(idx),
            "pixel": pixel_metrics([maps[i] for i in idx], [masks[i] for i in idx], [0.3]),
        }
    return {
        "width": w, "height": h, "kernel": kernel, "defect_types": types,
        "maps": [f32_list(m) for m in maps],
        "masks": [[int(v) for v in m.ravel()] for m in masks],
        "image_scores": f32_list(scores),
        "image": image_metrics(everything),
        "pixel": pixel_metrics(maps, masks, [0.3]),
        "per_defect": per_defect,
    }


def write(name, payload):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, separators=(",", ":"))
    os.replace(path + ".tmp", path)
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KiB")


if __name__ == "__main__":
    write("classification.json", make_classification())
    write("aupro.json", make_aupro())
    write("image_score.json", make_image_score())
    write("evaluator.json", make_evaluator())
