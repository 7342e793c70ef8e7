#!/usr/bin/env python3
"""PyTorch/diffusers side of benches/sampling.rs: the same UNet2DModel configurations,
the same latent size (32x32x4 + 4 condition channels) and batch sizes, 2 threads.

Reports, per configuration and batch: UNet forward images/s and DDIM-10 / DDIM-50
reconstructions/s (DDIMScheduler with DiffAD's settings, clean condition concatenated,
eta 0). Like the Rust bench, the paper configuration's DDIM figures are estimated from
the measured per-step time (a DDIM step costs one forward plus a few element-wise
ops), unless --full is given.

Usage: python3 scripts/bench_diffusers_unet.py [--threads 2] [--full] [--json out.json]
"""
import argparse
import json
import statistics
import time

import torch
from diffusers import DDIMScheduler, UNet2DModel

CONFIGS = {
    "diffad": dict(
        in_channels=8, out_channels=4, block_out_channels=(256, 512, 1024), layers_per_block=2,
        down_block_types=("AttnDownBlock2D",) * 3, up_block_types=("AttnUpBlock2D",) * 3,
        attention_head_dim=32, norm_num_groups=32,
    ),
    "tiny": dict(
        in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=16, norm_num_groups=8,
    ),
}


def timeit(fn, samples, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ddim_reconstruct(model, sched, cond, steps):
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(cond.shape, generator=g)
    for t in sched.timesteps:
        eps = model(torch.cat([z, cond], 1), t.expand(cond.shape[0])).sample
        z = sched.step(eps, t, z).prev_sample
    return z


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="run the paper config's DDIM chains in full")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sched = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.02, clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    results = []
    for name, cfg in CONFIGS.items():
        model = UNet2DModel(sample_size=32, **cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        for batch in (1, 8):
            x = torch.randn(batch, 8, 32, 32)
            t = torch.full((batch,), 500)
            cond = torch.randn(batch, 4, 32, 32)
            samples = 3 if name == "diffad" else 20
            with torch.inference_mode():
                fwd = timeit(lambda: model(x, t).sample, samples)
                row = dict(config=name, params=params, batch=batch, forward_s=fwd,
                           forward_images_per_s=batch / fwd)
                for steps in (10, 50):
                    if name == "diffad" and not args.full:
                        secs = steps * fwd
                        row[f"ddim{steps}_estimated"] = True
                    else:
                        secs = timeit(lambda: ddim_reconstruct(model, sched, cond, steps), 3 if steps == 10 else 1)
                        row[f"ddim{steps}_estimated"] = False
                    row[f"ddim{steps}_s"] = secs
                    row[f"ddim{steps}_recon_per_s"] = batch / secs
            print(json.dumps(row), flush=True)
            results.append(row)
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), results=results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
