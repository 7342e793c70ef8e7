"""Regenerates `assets/photos/*.png`, the surface photographs of the
real-photograph benchmark (`diffad photo-data`), from the sample images that
the scikit-image wheel ships in `skimage/data/` (no download at run time).

    pip install scikit-image==0.26.0 pillow
    python scripts/photo_assets.py            # writes assets/photos/

Each asset is one rectangular region of one photograph, resized so that the
benchmark's crop side (`crop` in `src/photo_data/classes.rs`, 96 or 128
asset pixels) covers a sensible patch of the surface. Sources and licences
(from the docstrings of `skimage.data`):

| asset      | skimage file  | what                               | licence |
|------------|---------------|------------------------------------|---------|
| brick      | brick.png     | brick wall (CC0Textures Bricks25)  | CC0     |
| grass      | grass.png     | grass (DeviantArt linolafett)      | CC0     |
| gravel     | gravel.png    | gravel (CC0Textures Gravel04)      | CC0     |
| wood       | coffee.png    | the wooden table right of the cup  | CC0 (Rachel Michetti) |
| tissue     | ihc.png       | IHC-stained colonic glands (CMMI)  | no known copyright restrictions |
| retina     | retina.jpg    | fundus, temporal of the fovea      | CC0 (Mikael Häggström, Wikimedia) |

Only Pillow is imported; scikit-image is located, not imported.
"""

import importlib.util
import pathlib
import sys

from PIL import Image

# name: (file, crop box in the source (left, top, right, bottom), scale, mode)
ASSETS = {
    "brick": ("brick.png", (0, 0, 512, 410), 0.625, "L"),
    "grass": ("grass.png", (0, 0, 320, 256), 1.0, "L"),
    "gravel": ("gravel.png", (0, 0, 320, 256), 1.0, "L"),
    "wood": ("coffee.png", (482, 0, 600, 400), 1.0, "RGB"),
    "tissue": ("ihc.png", (0, 0, 512, 512), 0.5, "RGB"),
    "retina": ("retina.jpg", (780, 380, 1260, 1020), 0.6, "RGB"),
}


def skimage_data_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-image is not installed: pip install scikit-image==0.26.0")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "data"


def main() -> None:
    data = skimage_data_dir()
    out = pathlib.Path(__file__).resolve().parent.parent / "assets" / "photos"
    out.mkdir(parents=True, exist_ok=True)
    for name, (file, box, scale, mode) in ASSETS.items():
        img = Image.open(data / file).convert(mode).crop(box)
        if scale != 1.0:
            size = (round(img.width * scale), round(img.height * scale))
            img = img.resize(size, Image.LANCZOS)
        path = out / f"{name}.png"
        img.save(path, optimize=True)
        print(f"{path}: {img.width}x{img.height} {mode}, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
