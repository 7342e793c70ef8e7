#!/usr/bin/env python3
"""A small random-weight diffusers UNet2DModel and its forward output.

Writes, under tests/fixtures/:
  unet_tiny.safetensors     the state dict (diffusers names), stored as float16 to
                            stay small; the reference forward runs with exactly these
                            (f16-rounded) weights in float32, so nothing is lost.
  unet_tiny_io.safetensors  `sample` (2, 8, 8, 8), `timesteps` (2,) float32 and
                            `output` (2, 4, 8, 8) float32 = model(sample, timesteps).
  unet_tiny_config.json     the diffusers config (read by UNetConfig::from_diffusers_json).

Two levels, one with attention (AttnDownBlock2D / AttnUpBlock2D) and one without
(DownBlock2D / UpBlock2D), so both block kinds, the down/up samplers, the mid block and
the skip concatenations are exercised. All 1-D parameters (norm scales and biases,
linear/conv biases) are perturbed so no layer is an identity.

Usage: python3 scripts/make_unet_fixture.py   (diffusers 0.42, torch 2.x)
"""
import json
import os

import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.manual_seed(1234)

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")

model = UNet2DModel(
    sample_size=8,
    in_channels=8,
    out_channels=4,
    block_out_channels=(16, 32),
    layers_per_block=2,
    down_block_types=("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D"),
    attention_head_dim=8,
    norm_num_groups=8,
).eval()

with torch.no_grad():
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.add_(0.3 * torch.randn_like(p))
        else:
            p.mul_(1.5)
        # round to float16 so the stored weights are exactly the ones used
        p.copy_(p.half().float())

sample = torch.randn(2, 8, 8, 8)
timesteps = torch.tensor([10.0, 737.0])
with torch.no_grad():
    output = model(sample, timesteps).sample

state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
save_file(state, os.path.join(FIX, "unet_tiny.safetensors"))
save_file(
    {"sample": sample.contiguous(), "timesteps": timesteps, "output": output.contiguous()},
    os.path.join(FIX, "unet_tiny_io.safetensors"),
)
cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.items() if not k.startswith("_")}
with open(os.path.join(FIX, "unet_tiny_config.json"), "w") as f:
    json.dump(cfg, f, indent=1)
print("params", sum(p.numel() for p in model.parameters()), "output std", output.std().item())
