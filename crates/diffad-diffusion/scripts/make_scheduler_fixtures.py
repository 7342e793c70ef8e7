#!/usr/bin/env python3
"""Reference trajectories of diffusers' DDPMScheduler / DDIMScheduler.

Writes tests/fixtures/schedulers.json, read by tests/schedulers.rs.

Every scheduler is built by diffusers with the given config, then its
betas / alphas / alphas_cumprod (and `one` / `final_alpha_cumprod`) are
replaced by float64 tensors computed with the same formulas, so the
trajectories test the scheduler *logic* at double precision (diffusers keeps
them in float32, which alone differs from the exact values by ~3e-7). The
float32 `alphas_cumprod` diffusers itself produces are recorded too.

The "model" is a fixed analytic function of the sample and t, and the
stochastic noise of DDPM / DDIM(eta > 0) is a fixed analytic function too, so
the Rust test can recompute both exactly:

    model_output(x, t) = 0.8 * tanh(x) + 0.05 * sin(t / 37)
    noise(x, t)        = sin(1.7 * x + 0.013 * t)

Usage: python3 scripts/make_scheduler_fixtures.py   (diffusers 0.42, torch 2.x)
"""
import json
import math
import os

import numpy as np
import torch
import diffusers
from diffusers import DDIMScheduler, DDPMScheduler
import diffusers.schedulers.scheduling_ddpm as ddpm_module

torch.set_num_threads(1)
torch.manual_seed(0)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "schedulers.json")
SHAPE = (2, 2, 3, 3)
T = 1000


def betas64(cfg):
    n = cfg.get("num_train_timesteps", T)
    kind = cfg["beta_schedule"]
    if kind == "linear":
        return torch.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor(
            [min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float64
        )
    raise ValueError(kind)


def to64(sched, cfg):
    """Swap the scheduler's float32 schedule for the exact float64 one."""
    b = betas64(cfg)
    sched.betas = b
    sched.alphas = 1.0 - b
    sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = (
            torch.tensor(1.0, dtype=torch.float64)
            if cfg.get("set_alpha_to_one", True)
            else sched.alphas_cumprod[0]
        )
    if hasattr(sched, "one"):
        sched.one = torch.tensor(1.0, dtype=torch.float64)


def model_output(x, t):
    return 0.8 * torch.tanh(x) + 0.05 * math.sin(t / 37.0)


def analytic_noise(x, t):
    return torch.sin(1.7 * x + 0.013 * t)


def flat(x):
    return [float(v) for v in x.flatten().tolist()]


def record_steps(n):
    """Step indices whose outputs are stored (all when short, else a sample)."""
    if n <= 20:
        return set(range(n))
    keep = set(range(0, n, max(1, n // 10)))
    keep.update({n - 2, n - 1})
    return keep


initial = torch.randn(SHAPE, dtype=torch.float64)

fixture = {
    "generator": f"diffusers {diffusers.__version__}, torch {torch.__version__}",
    "shape": list(SHAPE),
    "initial_sample": flat(initial),
    "schedules": [],
    "ddpm": [],
    "ddim": [],
    "add_noise": [],
}

for cfg in [
    {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    {"beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.02},
    {"beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "beta_end": 0.02},
]:
    s = DDPMScheduler(num_train_timesteps=T, **cfg)
    fixture["schedules"].append(
        {
            "config": cfg,
            "alphas_cumprod_f32": [float(v) for v in s.alphas_cumprod.tolist()],
        }
    )

# DDPM: diffusers draws its variance noise with randn_tensor inside step();
# route it to the analytic noise of the current (sample, t).
_current = {}
ddpm_module.randn_tensor = lambda shape, **kw: _current["noise"]

ddpm_cases = [
    dict(
        beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.02,
        variance_type="fixed_small", prediction_type="epsilon", clip_sample=False,
        num_inference_steps=None, timestep_spacing="leading", steps_offset=0,
    ),
    dict(
        beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
        variance_type="fixed_large", prediction_type="v_prediction", clip_sample=True,
        clip_sample_range=1.0, num_inference_steps=50, timestep_spacing="leading", steps_offset=1,
    ),
    dict(
        beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02,
        variance_type="fixed_small", prediction_type="epsilon", clip_sample=True,
        clip_sample_range=1.5, num_inference_steps=16, timestep_spacing="trailing", steps_offset=0,
    ),
    dict(
        beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.02,
        variance_type="fixed_large", prediction_type="sample", clip_sample=False,
        num_inference_steps=15, timestep_spacing="linspace", steps_offset=0,
    ),
]
for case in ddpm_cases:
    cfg = {k: v for k, v in case.items() if k != "num_inference_steps"}
    s = DDPMScheduler(num_train_timesteps=T, **cfg)
    if case["num_inference_steps"] is not None:
        s.set_timesteps(case["num_inference_steps"])
    to64(s, cfg)
    ts = [int(t) for t in s.timesteps.tolist()]
    keep = record_steps(len(ts))
    x = initial.clone()
    steps = []
    for i, t in enumerate(ts):
        eps = model_output(x, t)
        _current["noise"] = analytic_noise(x, t)
        out = s.step(eps, t, x)
        x = out.prev_sample
        if i in keep:
            steps.append({"index": i, "t": t, "prev_sample": flat(x), "pred_original_sample": flat(out.pred_original_sample)})
    fixture["ddpm"].append({"config": case, "timesteps": ts, "steps": steps})

ddim_cases = [
    # DiffAD / CompVis DDIM (docs/reference.md §3), 10 and 50 steps.
    dict(
        beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.02, prediction_type="epsilon",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
        num_inference_steps=10, eta=0.0,
    ),
    dict(
        beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.02, prediction_type="epsilon",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
        num_inference_steps=50, eta=0.0,
    ),
    dict(
        beta_schedule="linear", beta_start=0.0001, beta_end=0.02, prediction_type="v_prediction",
        clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
        timestep_spacing="trailing", num_inference_steps=16, eta=0.5,
    ),
    dict(
        beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02, prediction_type="epsilon",
        clip_sample=True, clip_sample_range=2.0, set_alpha_to_one=True, steps_offset=0,
        timestep_spacing="linspace", num_inference_steps=15, eta=1.0,
    ),
    dict(
        beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.02, prediction_type="sample",
        clip_sample=False, set_alpha_to_one=False, steps_offset=0, timestep_spacing="leading",
        num_inference_steps=25, eta=0.3,
    ),
]
for case in ddim_cases:
    cfg = {k: v for k, v in case.items() if k not in ("num_inference_steps", "eta")}
    s = DDIMScheduler(num_train_timesteps=T, **cfg)
    s.set_timesteps(case["num_inference_steps"])
    to64(s, cfg)
    ts = [int(t) for t in s.timesteps.tolist()]
    keep = record_steps(len(ts))
    x = initial.clone()
    steps = []
    for i, t in enumerate(ts):
        eps = model_output(x, t)
        noise = analytic_noise(x, t) if case["eta"] > 0 else None
        out = s.step(eps, t, x, eta=case["eta"], variance_noise=noise)
        x = out.prev_sample
        if i in keep:
            steps.append({"index": i, "t": t, "prev_sample": flat(x), "pred_original_sample": flat(out.pred_original_sample)})
    fixture["ddim"].append({"config": case, "timesteps": ts, "steps": steps})

# add_noise with per-sample timesteps (DDIM and DDPM share the formula).
for cfg in [
    {"beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.02},
    {"beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "beta_end": 0.02},
]:
    s = DDIMScheduler(num_train_timesteps=T, **cfg)
    to64(s, cfg)
    noise = analytic_noise(initial, 0)
    t = torch.tensor([0, 999])
    noisy = s.add_noise(initial, noise, t)
    fixture["add_noise"].append({"config": cfg, "timesteps": t.tolist(), "noisy": flat(noisy)})

with open(OUT, "w") as f:
    json.dump(fixture, f)
print("wrote", OUT, os.path.getsize(OUT), "bytes")
