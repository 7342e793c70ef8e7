"""Convert a DRAEM discriminative checkpoint (`*_seg.pckl`, a pickled PyTorch
state dict of DiscriminativeSubNetwork) to safetensors for
`diffad_seg::DiscriminativeUNet::load`.

The names are kept as they are (`encoder_segment.block1.0.weight`, ...);
integer buffers (`num_batches_tracked`) are dropped, floats stored as F32.

Usage:  python3 scripts/convert_draem.py DRAEM_seg.pckl out.safetensors
Then load with DiscriminativeUNetConfig::new(6, 64) (DRAEM's segmenter sees 6 channels).
"""

import sys

import torch
from safetensors.torch import save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    state = torch.load(src, map_location="cpu", weights_only=True)
    if "state_dict" in state:
        state = state["state_dict"]
    out = {k: v.float().contiguous() for k, v in state.items() if v.is_floating_point()}
    save_file(out, dst)
    c_in = out["encoder_segment.block1.0.weight"].shape[1]
    width = out["encoder_segment.block1.0.weight"].shape[0]
    print(f"{len(out)} tensors -> {dst}: DiscriminativeUNetConfig::new({c_in}, {width})")


if __name__ == "__main__":
    main()
