"""Scores other anomaly maps built from an evaluated run, beside its own:
the evidence behind docs/experiments.md, "The reconstruction's colour, and
fusing with the baseline".

    pip install numpy pillow
    diffad eval --run RUN --data DATA          # with maps and panels (the default)
    python scripts/map_fusion.py RUN DATA      # DATA = one class folder, MVTec layout

It reads `x_a` and `x_r` from the eval panels (`<RUN>/eval/overlays/...`, the
first two tiles), the segmenter's map from `<RUN>/eval/anomaly_maps/...` and the
masks from `DATA/ground_truth`, and prints pixel AUROC, pixel AP and AU-PRO
(FPR limit 0.3, as docs/quality.md) of:

- `seg`: the run's map (reproduces its metrics.json);
- `knn`: the raw-pixel 7x7 patch nearest-neighbour baseline (memory stride 2,
  as `diffad baseline`, but with every memory patch where the baseline keeps
  at most 32768: its metrics.json to within a few tenths);
- `resid`: `|x_a - x_r|` (Euclidean over the colour channels);
- `resid, mean-matched`: the same after `x_r += mean(x_a) - mean(x_r)` per
  channel (`x_r` moved to the input's mean colour);
- `z(seg) + z(knn)`: both maps standardised by the mean and standard
  deviation of their values on the good test images, then added.

The standardisation uses the good *test* images, which favours the fusion: an
upper bound of what a fusion fitted on held-out images would score. Then the
spread of the per-image mean colour of `x_a` and `x_r` (how much of the
input's lighting the reconstruction keeps). Metrics per defect kind: that
kind's images against the good ones. Needs only numpy and Pillow.
"""

import pathlib
import sys

import numpy as np
from PIL import Image


def rgb(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def load(run, data):
    cls = data.name
    items = []
    for kind_dir in sorted((data / "test").iterdir()):
        kind = kind_dir.name
        for p in sorted(kind_dir.glob("*.png")):
            panel = rgb(run / "eval/overlays" / cls / "test" / kind / p.name)
            s = panel.shape[0]
            seg = np.asarray(
                Image.open(run / "eval/anomaly_maps" / cls / "test" / kind / (p.stem + ".tiff")),
                dtype=np.float64,
            )
            if kind == "good":
                gt = np.zeros((s, s), bool)
            else:
                mask = data / "ground_truth" / kind / (p.stem + "_mask.png")
                gt = np.asarray(Image.open(mask).convert("L")) > 127
            items.append(dict(kind=kind, xa=panel[:, :s], xr=panel[:, s : 2 * s], seg=seg, gt=gt))
    train = [rgb(p) for p in sorted((data / "train/good").glob("*.png"))]
    return items, train


def patches(img, size, stride):
    r = size // 2
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    return np.array(
        [pad[y : y + size, x : x + size].ravel() for y in range(0, h, stride) for x in range(0, w, stride)]
    )


def knn_map(img, memory, memory_sq, size=7):
    q = patches(img, size, 1)
    d = (q**2).sum(1)[:, None] + memory_sq[None] - 2 * q @ memory.T
    return np.sqrt(np.maximum(d.min(1), 0)).reshape(img.shape[:2])


def components(mask):
    """8-connected regions of a boolean mask, as a list of boolean masks."""
    label = np.zeros(mask.shape, int)
    n = 0
    h, w = mask.shape
    for y, x in zip(*np.nonzero(mask)):
        if label[y, x]:
            continue
        n += 1
        stack = [(y, x)]
        label[y, x] = n
        while stack:
            a, b = stack.pop()
            for da in (-1, 0, 1):
                for db in (-1, 0, 1):
                    c, d = a + da, b + db
                    if 0 <= c < h and 0 <= d < w and mask[c, d] and not label[c, d]:
                        label[c, d] = n
                        stack.append((c, d))
    return [label == k for k in range(1, n + 1)]


def auroc(s, y):
    order = np.argsort(s, kind="mergesort")
    rank = np.empty(len(s))
    rank[order] = np.arange(1, len(s) + 1)
    npos = y.sum()
    return (rank[y].sum() - npos * (npos + 1) / 2) / (npos * (len(y) - npos))


def average_precision(s, y):
    yy = y[np.argsort(-s)]
    precision = np.cumsum(yy) / np.arange(1, len(yy) + 1)
    return (precision * yy).sum() / yy.sum()


def aupro(maps, truths, limit=0.3, steps=300):
    regions = [(i, c) for i, t in enumerate(truths) for c in components(t)]
    normal = np.concatenate([m[~t] for m, t in zip(maps, truths)])
    fpr, pro = [], []
    for th in np.quantile(normal, np.linspace(1, 1 - limit * 1.02, steps)):
        fpr.append((normal > th).mean())
        pro.append(np.mean([(maps[i][c] > th).mean() for i, c in regions]))
    fpr, pro = np.array(fpr), np.array(pro)
    order = np.argsort(fpr)
    fpr, pro = fpr[order], pro[order]
    keep = fpr <= limit
    x = np.append(fpr[keep], limit)
    y = np.append(pro[keep], np.interp(limit, fpr, pro))
    return np.trapezoid(y, x) / limit


def row(name, maps, items):
    truths = [it["gt"] for it in items]
    flat = np.concatenate([m.ravel() for m in maps])
    y = np.concatenate([t.ravel() for t in truths])
    cells = [
        f"{100 * auroc(flat, y):.1f}",
        f"{100 * average_precision(flat, y):.1f}",
        f"{100 * aupro(maps, truths):.1f}",
    ]
    good = [i for i, it in enumerate(items) if it["kind"] == "good"]
    for kind in sorted({it["kind"] for it in items} - {"good"}):
        idx = good + [i for i, it in enumerate(items) if it["kind"] == kind]
        m = np.concatenate([maps[i].ravel() for i in idx])
        t = np.concatenate([truths[i].ravel() for i in idx])
        cells.append(f"{100 * auroc(m, t):.1f} / {100 * average_precision(m, t):.1f}")
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main():
    run, data = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    items, train = load(run, data)
    memory = np.concatenate([patches(t, 7, 2) for t in train])
    memory_sq = (memory**2).sum(1)
    good = [i for i, it in enumerate(items) if it["kind"] == "good"]

    def z(maps):
        values = np.concatenate([maps[i].ravel() for i in good])
        return [(m - values.mean()) / values.std() for m in maps]

    def shift(it):
        return it["xa"].mean((0, 1)) - it["xr"].mean((0, 1))

    seg = [it["seg"] for it in items]
    knn = [knn_map(it["xa"], memory, memory_sq) for it in items]
    kinds = sorted({it["kind"] for it in items} - {"good"})
    print(f"{run} on {data}\n")
    print("| map | pixel AUROC | pixel AP | AU-PRO | " + " | ".join(f"{k} AUROC / AP" for k in kinds) + " |")
    print("|---|" + "--:|" * (3 + len(kinds)))
    row("seg", seg, items)
    row("knn", knn, items)
    row("resid", [np.linalg.norm(it["xa"] - it["xr"], axis=2) for it in items], items)
    row(
        "resid, mean-matched",
        [np.linalg.norm(it["xa"] - it["xr"] - shift(it), axis=2) for it in items],
        items,
    )
    row("z(seg) + z(knn)", [a + b for a, b in zip(z(seg), z(knn))], items)
    xa_means = np.array([it["xa"].mean((0, 1)) for it in items])
    xr_means = np.array([it["xr"].mean((0, 1)) for it in items])
    print(
        "\nstd over the test images of the per-image mean colour (R, G, B): "
        f"x_a {np.round(xa_means.std(0), 4)}, x_r {np.round(xr_means.std(0), 4)}"
    )


if __name__ == "__main__":
    main()
