"""Loads a `diffad export` folder in diffusers and runs it on small fixed inputs.

The export must load with `AutoencoderKL.from_pretrained`, `UNet2DModel.from_pretrained`
and `DDIMScheduler.from_pretrained` exactly as diffusers' own folders do. This script
runs them on fixed inputs (seeded NumPy draws) and writes inputs and outputs to a
safetensors file; `tests/export.rs` loads the same export with diffad's loaders and
checks its outputs against that file (the committed fixture), so the test needs no
Python.

Needs (installs nothing itself): `pip install torch diffusers safetensors numpy`
(diffusers 0.42 and torch 2.15 made the committed fixture; any CPU build of torch works).

Regenerate the committed fixture (e.g. after a change of the parameter initialisation
or of the test's micro configuration):

    DIFFAD_EXPORT_DIR=target/diffad-export-fixture \
        cargo test -p diffad --test export -- --ignored write_export_for_the_diffusers_check
    python scripts/check_diffusers_export.py target/diffad-export-fixture \
        --out tests/fixtures/export/diffusers_outputs.safetensors

Check any export (prints its configs and output ranges; `--out` to keep the numbers):

    diffad export --run runs/bottle --out export/bottle
    python scripts/check_diffusers_export.py export/bottle --steps 10

The inputs follow DiffAD's use of the models: the VAE takes images in [-1, 1] and its
posterior mean is the latent (no `scaling_factor`), the UNet takes `cat([z_t, c], 1)`,
and the DDIM chain runs `--steps` deterministic steps (eta 0) under a fixed condition.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel
from safetensors.torch import save_file

SEED = 2023


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", help="folder written by `diffad export` (vae/, unet/, scheduler/)")
    parser.add_argument("--out", help="safetensors file for the inputs and diffusers' outputs")
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps of the chain (default 5)")
    parser.add_argument(
        "--image-size",
        type=int,
        help="side of the test images (default: twice the smallest the VAE and UNet take; 8 for the fixture)",
    )
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    models = {}
    for name, cls in [("vae", AutoencoderKL), ("unet", UNet2DModel)]:
        model, info = cls.from_pretrained(os.path.join(args.export, name), output_loading_info=True)
        # Every tensor must fit: nothing missing (left randomly initialised), nothing extra.
        bad = {k: v for k, v in info.items() if v}
        if bad:
            print(f"{name}: the weights do not match the config: {bad}", file=sys.stderr)
            return 1
        models[name] = model.eval()
    vae, unet = models["vae"], models["unet"]
    scheduler = DDIMScheduler.from_pretrained(os.path.join(args.export, "scheduler"))
    for name, config in [("vae", vae.config), ("unet", unet.config), ("scheduler", scheduler.config)]:
        print(f"{name}: {json.dumps({k: v for k, v in dict(config).items() if not k.startswith('_')})}")

    rng = np.random.default_rng(SEED)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    unet_f = 2 ** (len(unet.config.block_out_channels) - 1)
    side = args.image_size or 2 * f * unet_f
    latent_side = side // f
    latent = vae.config.latent_channels

    def normal(*shape):
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))

    out = {}
    # VAE: posterior of images in [-1, 1] and decoding of latents.
    x = torch.from_numpy(rng.uniform(-1.0, 1.0, (1, 3, side, side)).astype(np.float32))
    posterior = vae.encode(x).latent_dist
    out["vae.input"] = x
    out["vae.mean"] = posterior.mean
    out["vae.logvar"] = posterior.logvar
    z = normal(1, latent, latent_side, latent_side)
    out["vae.latents"] = z
    out["vae.decoded"] = vae.decode(z).sample

    # UNet: noise predictions for a batch of two at two timesteps.
    sample = normal(2, unet.config.in_channels, latent_side, latent_side)
    timesteps = torch.tensor([17, 801], dtype=torch.int64)
    out["unet.sample"] = sample
    out["unet.timesteps"] = timesteps
    out["unet.output"] = unet(sample, timesteps).sample

    # DDIM: the whole deterministic chain z_T -> z_0 under a fixed condition c, then D(z_0).
    scheduler.set_timesteps(args.steps)
    condition_channels = unet.config.in_channels - unet.config.out_channels
    condition = normal(1, condition_channels, latent_side, latent_side)
    z = normal(1, unet.config.out_channels, latent_side, latent_side)
    out["ddim.timesteps"] = scheduler.timesteps.to(torch.int64)
    out["ddim.condition"] = condition
    out["ddim.start"] = z
    for t in scheduler.timesteps:
        model_input = torch.cat([z, condition], dim=1) if condition_channels else z
        eps = unet(model_input, t).sample
        z = scheduler.step(eps, t, z, eta=0.0).prev_sample
    out["ddim.final"] = z
    out["ddim.decoded"] = vae.decode(z).sample

    for name, tensor in out.items():
        t = tensor.float()
        print(f"{name:16} {tuple(tensor.shape)!s:18} range [{t.min():.4f}, {t.max():.4f}]")
    if args.out:
        save_file({k: v.contiguous() for k, v in out.items()}, args.out)
        print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
