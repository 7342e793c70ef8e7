#!/usr/bin/env python3
"""PyTorch/diffusers side of `diffad speed` (src/speed.rs): the same four measurements on
the same architectures, device and precision, written as the same JSON report, so that
scripts/gpu-check.sh can print the ratios (docs/gpu.md).

| name                | batch | what runs                                                    |
|---------------------|-------|--------------------------------------------------------------|
| unet_forward        | 1, 8  | UNet2DModel on cat([z_t, c], 1) at latent_size, one timestep  |
| ddim_reconstruction | 8     | DDIMScheduler, inference.ddim_steps steps, eta 0, clean c     |
| predict             | 8     | c = E(2x - 1).mean, DDIM, x_r = D(z_r), x_inter =              |
|                     |       | D(lambda c + (1 - lambda) z_r), DRAEM segmenter, softmax[1],   |
|                     |       | image scores (avg_pool max), maps and scores back on the host |

The architectures come from diffad itself: `diffad speed --config NAME --write-configs DIR`
writes the diffusers configs (vae/config.json, unet/config.json,
scheduler/scheduler_config.json) and diffad.toml (image size, steps, segmenter input,
lambda, widths); `--config paper|tiny` runs that command (`--diffad`, default
$DIFFAD or target/release/diffad), `--config DIR` reads a folder written by it. The
segmenter is DRAEM's discriminative network from crates/diffad-seg/scripts/draem_reference.py.
The weights are random (PyTorch's initialisation; DRAEM's for the segmenter): speed does
not depend on their values.

As in diffad, images and latents stay float32 and the networks run in --dtype: inputs are
cast to it at each network and outputs back to float32 (the sampler's arithmetic stays
float32). The DDIM start noise is drawn on the CPU and copied over, as diffad does.
float32 convolutions and matrix products run without TF32 unless --tf32 is given
(Candle's float32 arithmetic on CUDA is full float32; PyTorch's default lets cuDNN use
TF32 for convolutions).

Each figure is the median of --reps timed calls after one warm-up, with
torch.cuda.synchronize() before the clock is read on CUDA. On the CPU,
torch.set_num_threads(os.cpu_count()).

Usage:
    python3 scripts/torch_speed.py --device cuda --dtype bf16 --config paper --reps 5 --json out.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    tomllib = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "crates", "diffad-seg", "scripts"))
from draem_reference import Disc, weights_init  # noqa: E402

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
BATCH = 8


def load_configs(spec, diffad):
    """The diffusers configs and diffad.toml of a preset/TOML file (through `diffad speed
    --write-configs`) or of a folder already written by it."""
    if os.path.isdir(spec):
        folder = spec
    else:
        folder = tempfile.mkdtemp(prefix="torch-speed-")
        subprocess.run(
            [diffad, "speed", "--config", spec, "--write-configs", folder],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def read_json(*parts):
        with open(os.path.join(folder, *parts)) as f:
            return json.load(f)

    if tomllib is None:
        sys.exit("torch_speed.py needs Python 3.11+ (tomllib) to read diffad.toml")
    with open(os.path.join(folder, "diffad.toml"), "rb") as f:
        config = tomllib.load(f)
    return (
        read_json("vae", "config.json"),
        read_json("unet", "config.json"),
        read_json("scheduler", "scheduler_config.json"),
        config,
    )


class Timer:
    def __init__(self, device, warmup, reps):
        self.cuda = device.type == "cuda"
        self.warmup, self.reps = warmup, reps

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def median(self, work):
        for _ in range(self.warmup):
            work()
        self.sync()
        times = []
        for _ in range(self.reps):
            start = time.perf_counter()
            out = work()
            self.sync()
            times.append(time.perf_counter() - start)
            del out
        return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    ap.add_argument("--config", default="paper", help="paper, tiny, a TOML file, or a --write-configs folder")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--tf32", action="store_true", help="let float32 convolutions and matmuls use TF32")
    ap.add_argument(
        "--diffad",
        default=os.environ.get("DIFFAD", os.path.join(ROOT, "target", "release", "diffad")),
        help="the diffad binary that writes the configs of a preset",
    )
    args = ap.parse_args()
    if args.reps < 1:
        sys.exit("--reps must be at least 1")

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel  # after argparse: slow import
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # no advice on `.to(dtype)` casts

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count())
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(0)
    torch.set_grad_enabled(False)

    vae_cfg, unet_cfg, sched_cfg, config = load_configs(args.config, args.diffad)
    inference, seg_cfg = config["inference"], config["segmenter"]
    if config["ldm"]["reconstruction"] == "forward-reverse" or "condition_noise_step" in inference:
        sys.exit("torch_speed.py mirrors the clean-condition reverse process only "
                 "(ldm.reconstruction noisy-/clean-condition, no inference.condition_noise_step)")
    size = config["data"]["image_size"]
    f = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    side = size // f
    latent = vae_cfg["latent_channels"]
    steps = inference["ddim_steps"]
    kernel = inference["score_kernel"]
    seg_input = seg_cfg["input"]
    lam = seg_cfg["lambda"]

    vae = AutoencoderKL.from_config(vae_cfg).to(device, dtype).eval()
    unet = UNet2DModel.from_config(unet_cfg).to(device, dtype).eval()
    scheduler = DDIMScheduler.from_config(sched_cfg)
    seg_in = 6 if seg_input == "reconstruction-only" else 9
    seg = Disc(seg_in, seg_cfg["base_channels"])
    seg.apply(weights_init)
    seg = seg.to(device, dtype).eval()
    timer = Timer(device, args.warmup, args.reps)

    def eps(z, t, c):
        return unet(torch.cat([z, c], 1).to(dtype), t).sample.float()

    def ddim(c):
        scheduler.set_timesteps(steps)
        gen = torch.Generator().manual_seed(0)
        z = torch.randn((1,) + tuple(c.shape[1:]), generator=gen).repeat(c.shape[0], 1, 1, 1).to(device)
        for t in scheduler.timesteps:
            z = scheduler.step(eps(z, t.to(device), c), t, z, eta=0.0).prev_sample
        return z

    def decode(z):
        return ((vae.decode(z.to(dtype)).sample.float() + 1) / 2).clamp(0, 1)

    def predict(images):
        x = images.to(device)
        c = vae.encode((2 * x - 1).to(dtype)).latent_dist.mean.float()
        z_r = ddim(c)
        pieces = [decode(z_r)]
        if seg_input == "interpolated":
            pieces.append(decode(lam * c + (1 - lam) * z_r))
        elif seg_input == "vae-reconstruction":
            pieces.append(decode(c))
        pieces.append(x)
        logits = seg(torch.cat(pieces, 1).to(dtype)).float()
        maps = torch.softmax(logits, 1)[:, 1:2]
        scores = F.avg_pool2d(maps, kernel, stride=1, padding=kernel // 2).amax((1, 2, 3))
        return maps.cpu(), scores.cpu()

    measurements = []

    def record(name, batch, seconds):
        row = dict(name=name, batch=batch, seconds=seconds, images_per_second=batch / seconds)
        measurements.append(row)
        print(json.dumps(row), flush=True)

    with torch.inference_mode():
        t_mid = torch.tensor(config["ldm"]["timesteps"] // 2, device=device)
        for batch in (1, BATCH):
            z = torch.randn(batch, latent, side, side, device=device)
            c = torch.randn(batch, latent, side, side, device=device)
            record("unet_forward", batch, timer.median(lambda: eps(z, t_mid.expand(batch), c)))
        c = torch.randn(BATCH, latent, side, side, device=device)
        record("ddim_reconstruction", BATCH, timer.median(lambda: ddim(c)))
        images = torch.rand(BATCH, 3, size, size)
        record("predict", BATCH, timer.median(lambda: predict(images)))

    name = str(device) if device.type == "cpu" else f"cuda:{device.index or 0}"
    report = dict(
        implementation="torch",
        device=name,
        precision=args.dtype,
        image_size=size,
        latent_size=side,
        ddim_steps=steps,
        options=dict(warmup=args.warmup, reps=args.reps),
        measurements=measurements,
        torch_version=torch.__version__,
        diffusers_version=diffusers.__version__,
        threads=torch.get_num_threads(),
        tf32=args.tf32,
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
