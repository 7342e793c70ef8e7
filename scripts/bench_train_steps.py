#!/usr/bin/env python3
"""PyTorch/diffusers side of benches/train_step.rs (docs/benchmarks.md, "Training steps
at the small configurations"): one training step (forward, loss, backward, optimiser
update) of each stage at the `tiny` preset's sizes, batch 8, 64x64 images, float32 on
the CPU with torch.set_num_threads(--threads).

| name     | network (diffad::Config::tiny())                                   | step |
|----------|--------------------------------------------------------------------|------|
| vae_w16  | AutoencoderKL, widths 16/32/32, 1 res block, 4 latent ch, 8 groups  | L1 + SSIM + 1e-6 KL, AdamW(2e-3, (0.5, 0.9), wd 0) |
| vae_w32  | the same with widths 32/64/64                                      | the same |
| ldm_tiny | UNet2DModel 32/64, attention on level 2 and mid, heads of 32, 8 groups, in 8 (16x16x4 latent + clean condition), out 4 | epsilon MSE, clip_grad_norm 1, AdamW(1e-3, wd 0.01) |
| seg_tiny | DRAEM's discriminative network, width 8, 9 input channels          | DRAEM focal loss on softmax, Adam(1e-3) |

The VAE step computes what diffad-vae's `VaeTrainer::train_step` computes (train.rs,
loss.rs): x in [-1, 1], z = mu + sigma * eps, per-image sum over (C, H, W) of |x - x_hat|
plus the sum of 1 - SSIM(x, x_hat) (11x11 Gaussian window, sigma 1.5, zero padding, data
range 2), averaged over the batch, plus kl_weight * mean KL; the global gradient norm (the
trainer reports it and checks it is finite); AdamW. No perceptual term and no PatchGAN:
the tiny preset has neither (the PatchGAN starts at step 50001). The SSIM blur is a
depthwise convolution, either DRAEM's 11x11 one (`--ssim draem`) or two 1-D passes
(`--ssim separable`, the default: the faster of the two here).

The LDM step draws t ~ U{0..999} and eps per step, z_t = sqrt(abar_t) z + sqrt(1 - abar_t)
eps on the scaled-linear schedule (0.0015..0.02), predicts eps from cat([z_t, c], 1) and
takes MSE, as diffad-diffusion's `LdmTrainer::train_step` with the clean condition.

Each figure is the median of --reps timed steps after --warmup untimed ones.

Needs torch and diffusers (`pip install torch diffusers`). Usage:
    python3 scripts/bench_train_steps.py [--threads 2] [--reps 10]
        [--stages vae_w16,vae_w32,ldm_tiny,seg_tiny] [--json out.json]
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "crates", "diffad-seg", "scripts"))
from draem_reference import Disc, focal_loss, weights_init  # noqa: E402

BATCH = 8
SIZE = 64
STAGES = ("vae_w16", "vae_w32", "ldm_tiny", "seg_tiny")


def gaussian_window(size=11, sigma=1.5):
    g = torch.tensor([math.exp(-((i - size // 2) ** 2) / (2 * sigma**2)) for i in range(size)])
    return g / g.sum()


class Ssim:
    """DRAEM's SSIM map (zero-padded Gaussian moments), per channel."""

    def __init__(self, channels, mode):
        g = gaussian_window()
        self.channels = channels
        self.mode = mode
        if mode == "draem":
            self.w2d = (g[:, None] * g[None, :]).expand(channels, 1, 11, 11).contiguous()
        else:
            self.wh = g.view(1, 1, 11, 1).expand(channels, 1, 11, 1).contiguous()
            self.ww = g.view(1, 1, 1, 11).expand(channels, 1, 1, 11).contiguous()

    def blur(self, x):
        c = self.channels
        if self.mode == "draem":
            return F.conv2d(x, self.w2d, padding=5, groups=c)
        x = F.conv2d(x, self.ww, padding=(0, 5), groups=c)
        return F.conv2d(x, self.wh, padding=(5, 0), groups=c)

    def map(self, x, y, data_range):
        mu_x, mu_y = self.blur(x), self.blur(y)
        mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        sigma_x2 = self.blur(x * x) - mu_x2
        sigma_y2 = self.blur(y * y) - mu_y2
        sigma_xy = self.blur(x * y) - mu_xy
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        num = (2 * mu_xy + c1) * (2 * sigma_xy + c2)
        den = (mu_x2 + mu_y2 + c1) * (sigma_x2 + sigma_y2 + c2)
        return num / den


def vae_step(width, ssim_mode):
    from diffusers import AutoencoderKL

    widths = [width, 2 * width, 2 * width]  # channel_mult [1, 2, 2]
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=widths, layers_per_block=1, latent_channels=4, norm_num_groups=8,
    ).train()
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, betas=(0.5, 0.9), eps=1e-8, weight_decay=0.0)
    images = torch.rand(BATCH, 3, SIZE, SIZE)
    ssim = Ssim(3, ssim_mode)
    gen = torch.Generator().manual_seed(1)
    kl_weight, ssim_weight = 1e-6, 1.0

    def step():
        opt.zero_grad(set_to_none=True)
        x = images * 2 - 1
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=gen)
        z = posterior.mean + posterior.std * noise
        x_hat = vae.decode(z).sample
        per_image = (x - x_hat).abs().flatten(1).sum(1)
        per_image = per_image + ssim_weight * (1 - ssim.map(x, x_hat, 2.0)).flatten(1).sum(1)
        reconstruction = per_image.mean()
        kl = posterior.kl().mean()
        total = reconstruction + kl_weight * kl
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        assert math.isfinite(norm.item()) and math.isfinite(total.item())
        opt.step()

    return vae, step


def ldm_step():
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        sample_size=SIZE // 4, in_channels=8, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=32,
        norm_num_groups=8,
    ).train()
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    betas = torch.linspace(0.0015**0.5, 0.02**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(BATCH, 4, SIZE // 4, SIZE // 4, generator=gen)
    cond = torch.randn(BATCH, 4, SIZE // 4, SIZE // 4, generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        t = torch.randint(0, 1000, (BATCH,), generator=gen)
        eps = torch.randn(z.shape, generator=gen)
        a = abar[t].float().view(-1, 1, 1, 1)
        z_t = a.sqrt() * z + (1 - a).sqrt() * eps
        prediction = unet(torch.cat([z_t, cond], 1), t).sample
        loss = F.mse_loss(prediction, eps)
        assert math.isfinite(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return unet, step


def seg_step():
    net = Disc(9, 8)
    net.apply(weights_init)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(BATCH, 9, SIZE, SIZE)
    mask = (torch.rand(BATCH, 1, SIZE, SIZE) < 0.1).float()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = focal_loss(torch.softmax(net(x), 1), mask)
        assert math.isfinite(loss.item())
        loss.backward()
        opt.step()

    return net, step


def build(name, ssim_mode):
    if name == "vae_w16":
        return vae_step(16, ssim_mode)
    if name == "vae_w32":
        return vae_step(32, ssim_mode)
    if name == "ldm_tiny":
        return ldm_step()
    if name == "seg_tiny":
        return seg_step()
    raise SystemExit(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--ssim", choices=("separable", "draem"), default="separable")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for name in args.stages.split(","):
        model, step = build(name, args.ssim)
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        row = dict(
            stage=name, batch=BATCH, size=SIZE,
            params=sum(p.numel() for p in model.parameters()),
            median_s=statistics.median(times), min_s=min(times), reps=args.reps,
        )
        if name.startswith("vae"):
            row["ssim"] = args.ssim
        print(json.dumps(row), flush=True)
        results.append(row)
    meta = dict(
        torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.processor()
        or platform.machine(), results=results,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
