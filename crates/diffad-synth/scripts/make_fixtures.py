"""Reference fixtures for diffad-synth's tests (run from the crate root):

    python3 scripts/make_fixtures.py

Writes tests/fixtures/*.json. Needs numpy, scipy and Pillow (no torch, no
imgaug, no OpenCV). Everything is seeded; rerunning gives identical files.

* perlin.json: DRAEM's `rand_perlin_2d_np` restated below (same arithmetic),
  with the gradient angles passed in so the Rust code can use the same ones;
  plus one non-multiple size computed DRAEM's way on the padded size and
  cropped, and one noise rotated with scipy.ndimage.rotate.
* mask_coverage.json: coverage (fraction of ones) of masks made by DRAEM's
  procedure (`augment_image` in DRAEM's data_loader.py): k_x, k_y ~ U{0..5},
  rand_perlin_2d_np, rotation U[-90, 90] degrees, threshold 0.5. imgaug's
  `Affine(rotate=...)` (OpenCV warpAffine, bilinear, zero fill, centre
  (W/2 - 0.5, H/2 - 0.5)) is replaced by scipy.ndimage.rotate(reshape=False,
  order=1, mode="grid-constant", cval=0), which uses the same centre and,
  like OpenCV's BORDER_CONSTANT, interpolates with the zeros beyond the edge
  (scipy's mode="constant" does not).
* pil_augment.json: Pillow's ImageOps.autocontrast / equalize / posterize /
  solarize and ImageEnhance.Sharpness outputs on a fixed 12x10 RGB image
  (the operations imgaug's `pillike` augmenters call).
"""
import json
import math
import os

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from scipy import ndimage

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")


def lerp_np(x, y, w):
    return (y - x) * w + x


def perlin_from_angles(shape, res, angles):
    """DRAEM's rand_perlin_2d_np with the random angles given."""
    fade = lambda t: 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3
    delta = (res[0] / shape[0], res[1] / shape[1])
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0:res[0]:delta[0], 0:res[1]:delta[1]].transpose(1, 2, 0) % 1
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)
    tile_grads = lambda s1, s2: np.repeat(
        np.repeat(gradients[s1[0]:s1[1], s2[0]:s2[1]], d[0], axis=0), d[1], axis=1)
    dot = lambda grad, shift: (np.stack(
        (grid[:shape[0], :shape[1], 0] + shift[0], grid[:shape[0], :shape[1], 1] + shift[1]),
        axis=-1) * grad[:shape[0], :shape[1]]).sum(axis=-1)
    n00 = dot(tile_grads([0, -1], [0, -1]), [0, 0])
    n10 = dot(tile_grads([1, None], [0, -1]), [-1, 0])
    n01 = dot(tile_grads([0, -1], [1, None]), [0, -1])
    n11 = dot(tile_grads([1, None], [1, None]), [-1, -1])
    t = fade(grid[:shape[0], :shape[1]])
    return math.sqrt(2) * lerp_np(lerp_np(n00, n10, t[..., 0]), lerp_np(n01, n11, t[..., 0]), t[..., 1])


def rand_perlin_2d_np(shape, res, rng):
    angles = 2 * math.pi * rng.random((res[0] + 1, res[1] + 1))
    return perlin_from_angles(shape, res, angles)


def rotate(img, degrees):
    return ndimage.rotate(img, degrees, reshape=False, order=1, mode="grid-constant", cval=0.0)


def perlin_fixture():
    rng = np.random.default_rng(1234)
    cases = []
    for (h, w, r0, r1) in [(32, 32, 4, 2), (16, 32, 1, 32), (32, 16, 16, 16), (24, 24, 3, 8), (8, 8, 1, 1)]:
        angles = 2 * math.pi * rng.random((r0 + 1, r1 + 1))
        out = perlin_from_angles((h, w), (r0, r1), angles)
        cases.append(dict(height=h, width=w, res=[r0, r1], angles=angles.ravel().tolist(),
                          noise=out.ravel().tolist()))
    # A size that is not a multiple: DRAEM on the padded size, cropped.
    h, w, r0, r1 = 21, 13, 4, 8
    ph, pw = -(-h // r0) * r0, -(-w // r1) * r1
    angles = 2 * math.pi * rng.random((r0 + 1, r1 + 1))
    out = perlin_from_angles((ph, pw), (r0, r1), angles)[:h, :w]
    cases.append(dict(height=h, width=w, res=[r0, r1], angles=angles.ravel().tolist(),
                      noise=out.ravel().tolist()))
    # Rotation of one noise field by +30 degrees (scipy's sign convention).
    base = cases[0]
    noise = np.array(base["noise"]).reshape(base["height"], base["width"])
    rotated = rotate(noise, 30.0)
    return dict(cases=cases, rotation=dict(case=0, degrees=30.0, rotated=rotated.ravel().tolist()))


def mask_coverage_fixture(n=4000, size=64):
    rng = np.random.default_rng(2021)
    cov = []
    for _ in range(n):
        kx = 2 ** int(rng.integers(0, 6))
        ky = 2 ** int(rng.integers(0, 6))
        noise = rand_perlin_2d_np((size, size), (kx, ky), rng)
        noise = rotate(noise, rng.uniform(-90, 90))
        mask = noise > 0.5
        cov.append(float(mask.mean()))
    cov = np.array(cov)
    return dict(size=size, n=n, coverage=cov.round(6).tolist(),
                empty_fraction=float((cov == 0).mean()), mean=float(cov.mean()))


def pil_fixture():
    h, w = 12, 10
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 23 + y * 7) % 256, (y * 19 + 40) % 256, (x * y * 5 + 90) % 256], -1).astype(np.uint8)
    img[3, 4] = [255, 0, 128]
    pil = Image.fromarray(img)
    out = dict(height=h, width=w, image=img.ravel().tolist())
    out["autocontrast"] = {str(c): np.asarray(ImageOps.autocontrast(pil, cutoff=c)).ravel().tolist()
                           for c in [0, 5, 20]}
    out["equalize"] = np.asarray(ImageOps.equalize(pil)).ravel().tolist()
    out["posterize"] = {str(b): np.asarray(ImageOps.posterize(pil, b)).ravel().tolist() for b in [1, 3, 8]}
    out["solarize"] = {str(t): np.asarray(ImageOps.solarize(pil, t)).ravel().tolist() for t in [32, 100]}
    out["sharpness"] = {str(f): np.asarray(ImageEnhance.Sharpness(pil).enhance(f)).ravel().tolist()
                        for f in [0.0, 0.5, 1.7]}
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in [("perlin.json", perlin_fixture()),
                       ("mask_coverage.json", mask_coverage_fixture()),
                       ("pil_augment.json", pil_fixture())]:
        path = os.path.join(OUT, name)
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)
        print(name, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
