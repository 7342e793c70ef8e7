#!/usr/bin/env python3
"""diffusers AutoencoderKL baseline for benches/vae.rs.

Same architecture as `AutoencoderKlConfig::diffad()` (kl.yaml: 128/256/512/512, 2 res
blocks, 4 latent channels, f = 8), 256x256 inputs, batch 1 and 8, float32 on the CPU with
torch.set_num_threads(2) (the dev VM's core count; pass another number as argv[1]).
Encode = `encode(x).latent_dist.mean` (the posterior mode), decode = `decode(z).sample`
clamped to [0, 1] as our `LatentCodec::decode` does. Reports the median of N timed runs
after one warm-up run, in images/s.

    python3 crates/diffad-vae/scripts/bench_diffusers.py [threads]
"""
import statistics
import sys
import time

import torch
from diffusers import AutoencoderKL

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)

vae = AutoencoderKL(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
).eval()
print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
      f"params {sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M")


def timed(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


with torch.inference_mode():
    for batch, runs in [(1, 10), (8, 5)]:
        x = torch.rand(batch, 3, 256, 256)
        z = vae.encode(x * 2 - 1).latent_dist.mean
        enc = timed(lambda: vae.encode(x * 2 - 1).latent_dist.mean, runs)
        dec = timed(lambda: (vae.decode(z).sample * 0.5 + 0.5).clamp(0, 1), runs)
        print(f"batch {batch}: encode {enc:.3f} s/iter = {batch / enc:.3f} images/s; "
              f"decode {dec:.3f} s/iter = {batch / dec:.3f} images/s")
