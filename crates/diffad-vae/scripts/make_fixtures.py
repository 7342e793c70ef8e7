#!/usr/bin/env python3
"""Reference fixtures for diffad-vae: a small random-weight diffusers AutoencoderKL.

Writes into crates/diffad-vae/tests/fixtures/:
  tiny_vae_config.json          the diffusers config (our AutoencoderKlConfig reads the same numbers)
  tiny_vae.safetensors          the diffusers state dict (f32), names exactly as diffusers saves them
  tiny_vae_io.safetensors       input x in [-1,1], posterior mean/logvar, decoded(mean),
                                a noise tensor eps and decoded(mean + std * eps)

Every parameter (GroupNorm affine included) is re-drawn from a seeded normal so the
test exercises more than PyTorch's default init. Run from the repository root:
    python3 crates/diffad-vae/scripts/make_fixtures.py
"""
import json
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

torch.set_num_threads(2)
torch.manual_seed(0)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
os.makedirs(OUT, exist_ok=True)

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[8, 16, 16],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=4,
    sample_size=32,
    use_quant_conv=True,
    use_post_quant_conv=True,
    mid_block_add_attention=True,
)

model = AutoencoderKL(**CONFIG).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.ndim == 1 and name.endswith(".weight"):  # GroupNorm gamma
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        elif name.endswith(".bias"):
            p.copy_(0.1 * torch.randn_like(p))
        else:
            fan_in = p[0].numel()
            p.copy_(torch.randn_like(p) / fan_in**0.5)

state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
save_file(state, os.path.join(OUT, "tiny_vae.safetensors"))
with open(os.path.join(OUT, "tiny_vae_config.json"), "w") as f:
    json.dump(CONFIG, f, indent=2)

x = torch.rand(2, 3, 32, 32) * 2.0 - 1.0
with torch.no_grad():
    posterior = model.encode(x).latent_dist
    mean, logvar = posterior.mean, posterior.logvar
    decoded_mean = model.decode(mean).sample
    eps = torch.randn(mean.shape)
    z = mean + posterior.std * eps
    decoded_sample = model.decode(z).sample
    kl = posterior.kl()

io = dict(
    x=x,
    mean=mean,
    logvar=logvar,
    decoded_mean=decoded_mean,
    eps=eps,
    decoded_sample=decoded_sample,
    kl=kl,
)
save_file({k: v.contiguous().float() for k, v in io.items()}, os.path.join(OUT, "tiny_vae_io.safetensors"))
n_params = sum(p.numel() for p in model.parameters())
print(f"params {n_params}; mean {tuple(mean.shape)} |mean| {mean.abs().mean():.4f} "
      f"logvar range [{logvar.min():.3f}, {logvar.max():.3f}] decoded |x| {decoded_mean.abs().mean():.4f}")

# --- SSIM reference (DRAEM's `ssim`: 11x11 Gaussian window, sigma 1.5, zero padding 5,
# one window per channel), on a non-square pair so both blur directions are checked.
import torch.nn.functional as F

g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5.0) ** 2) / (2 * 1.5**2))
g = g / g.sum()
window = (g[:, None] @ g[None, :]).float().expand(3, 1, 11, 11).contiguous()
a = torch.rand(2, 3, 24, 20)
b = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)


def blur(t):
    return F.conv2d(t, window, padding=5, groups=3)


mu_a, mu_b = blur(a), blur(b)
s_a = blur(a * a) - mu_a**2
s_b = blur(b * b) - mu_b**2
s_ab = blur(a * b) - mu_a * mu_b
C1, C2 = 0.01**2, 0.03**2
ssim_map = ((2 * mu_a * mu_b + C1) * (2 * s_ab + C2)) / ((mu_a**2 + mu_b**2 + C1) * (s_a + s_b + C2))
save_file({"a": a, "b": b, "ssim_map": ssim_map.contiguous()}, os.path.join(OUT, "ssim_io.safetensors"))
print(f"ssim mean {ssim_map.mean():.4f}")

# --- AdamW reference: torch.optim.AdamW on one 7-vector for 3 steps with given gradients.
p = torch.nn.Parameter(torch.randn(7))
p0 = p.detach().clone()
opt = torch.optim.AdamW([p], lr=0.1, betas=(0.5, 0.9), eps=1e-8, weight_decay=0.1)
grads = [torch.randn(7) for _ in range(3)]
for g in grads:
    p.grad = g.clone()
    opt.step()
save_file(
    {"p0": p0, "g1": grads[0], "g2": grads[1], "g3": grads[2], "p3": p.detach().clone()},
    os.path.join(OUT, "adamw_io.safetensors"),
)
