"""Times DRAEM's NumPy anomaly-mask generation at 256x256 (one process, one
thread), for comparison with `cargo bench --bench synth -- synth_masks_256`.

    python3 crates/diffad-synth/scripts/bench_draem_masks.py [N]

The per-mask work is DRAEM's `augment_image` minus the texture:
k_x, k_y ~ U{0..5}; `rand_perlin_2d_np((256, 256), (2^k_x, 2^k_y))` (restated
verbatim from DRAEM's perlin.py); rotation by U[-90, 90] degrees; threshold
0.5. DRAEM rotates with imgaug's `Affine` (OpenCV `warpAffine`), which is not
installed here, so two variants are timed:

* `perlin+threshold`: no rotation at all. This is an upper bound on DRAEM's
  speed (rotation only adds time) and the baseline used for the ratio.
* `perlin+scipy_rotate+threshold`: rotation with scipy.ndimage.rotate
  (bilinear, zero fill), closer to the full procedure.
"""
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402


def lerp_np(x, y, w):
    return (y - x) * w + x


def rand_perlin_2d_np(shape, res, fade=lambda t: 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3):
    delta = (res[0] / shape[0], res[1] / shape[1])
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0:res[0]:delta[0], 0:res[1]:delta[1]].transpose(1, 2, 0) % 1
    angles = 2 * math.pi * np.random.rand(res[0] + 1, res[1] + 1)
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)
    tile_grads = lambda slice1, slice2: np.repeat(
        np.repeat(gradients[slice1[0]:slice1[1], slice2[0]:slice2[1]], d[0], axis=0), d[1], axis=1)
    dot = lambda grad, shift: (np.stack(
        (grid[:shape[0], :shape[1], 0] + shift[0], grid[:shape[0], :shape[1], 1] + shift[1]),
        axis=-1) * grad[:shape[0], :shape[1]]).sum(axis=-1)
    n00 = dot(tile_grads([0, -1], [0, -1]), [0, 0])
    n10 = dot(tile_grads([1, None], [0, -1]), [-1, 0])
    n01 = dot(tile_grads([0, -1], [1, None]), [0, -1])
    n11 = dot(tile_grads([1, None], [1, None]), [-1, -1])
    t = fade(grid[:shape[0], :shape[1]])
    return math.sqrt(2) * lerp_np(lerp_np(n00, n10, t[..., 0]), lerp_np(n01, n11, t[..., 0]), t[..., 1])


def mask(size, rotate):
    kx = 2 ** np.random.randint(0, 6)
    ky = 2 ** np.random.randint(0, 6)
    noise = rand_perlin_2d_np((size, size), (kx, ky))
    if rotate:
        noise = ndimage.rotate(noise, np.random.uniform(-90, 90), reshape=False, order=1,
                               mode="grid-constant", cval=0.0)
    return np.where(noise > 0.5, np.ones_like(noise), np.zeros_like(noise))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    np.random.seed(0)
    print(f"numpy {np.__version__}, 256x256, {n} masks per variant")
    for name, rotate in [("perlin+threshold", False), ("perlin+scipy_rotate+threshold", True)]:
        for _ in range(10):
            mask(256, rotate)  # warm-up
        best = None
        cpu = 0.0
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                mask(256, rotate)
            dt = time.perf_counter() - t0
            cpu += time.process_time() - c0
            best = dt if best is None else min(best, dt)
        print(f"{name}: {n / best:.1f} masks/s ({1e3 * best / n:.3f} ms/mask, best of 3 wall), "
              f"{3 * n / cpu:.1f} masks per CPU-second")


if __name__ == "__main__":
    main()
