"""Reference outputs of PyTorch / diffusers blocks for diffad-nn's tests.

Each fixture file `tests/fixtures/<name>.safetensors` holds the block's parameters under
`params.<diffusers state-dict name>` (float32), its inputs (`input`, and `temb` or
`timesteps` where used), and its outputs computed in float64 from exactly those float32
values (`output`, plus `running_mean`/`running_var` after a BatchNorm training step).

Run from the crate root:  python3 scripts/make_fixtures.py
Versions used: printed at the end (torch, diffusers).
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import diffusers
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.downsampling import Downsample2D
from diffusers.models.upsampling import Upsample2D
from diffusers.models.embeddings import Timesteps, TimestepEmbedding
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D

torch.manual_seed(0)
torch.set_num_threads(2)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
os.makedirs(OUT, exist_ok=True)


def randomize(module):
    """Random (not default) values for every parameter, stored exactly in float32."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module


def f32_exact(t):
    return t.float().double()


def save(name, module, tensors):
    params = {f"params.{k}": v.detach().float().contiguous() for k, v in module.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    data = dict(params)
    for k, v in tensors.items():
        data[k] = v.detach().contiguous()
    save_file(data, os.path.join(OUT, f"{name}.safetensors"))


def run(name, module, x, temb=None, extra=None, train=False, randomize_params=True):
    if randomize_params:
        randomize(module)
    module = module.double()
    module.train(train)
    x = f32_exact(x)
    if temb is not None:
        args = (x, f32_exact(temb))
    elif isinstance(module, ResnetBlock2D):
        args = (x, None)  # diffusers' ResnetBlock2D takes temb positionally
    else:
        args = (x,)
    with torch.no_grad():
        y = module(*args)
    tensors = {"input": x.float(), "output": y}
    if temb is not None:
        tensors["temb"] = temb.float()
    if extra:
        tensors.update(extra(module))
    save(name, module, tensors)


def conv_fixtures():
    run("conv_pad1", nn.Conv2d(4, 6, 3, padding=1), torch.randn(2, 4, 7, 6))
    run("conv_stride2", nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.randn(2, 4, 7, 6))
    run("conv_groups_dilation", nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
        torch.randn(2, 4, 7, 6))
    run("conv_1x1_nobias", nn.Conv2d(4, 6, 1, bias=False), torch.randn(2, 4, 5, 5))
    run("linear", nn.Linear(5, 3), torch.randn(2, 4, 5))


def norm_fixtures():
    run("group_norm", nn.GroupNorm(2, 6, eps=1e-6), torch.randn(2, 6, 3, 4) * 2 + 1)
    stats = lambda m: {"running_mean": m.running_mean.clone(), "running_var": m.running_var.clone()}

    def bn(name, train):
        m = randomize(nn.BatchNorm2d(3, eps=1e-5, momentum=0.1))
        with torch.no_grad():
            m.running_mean.copy_(torch.randn(3))
            m.running_var.copy_(torch.rand(3) + 0.5)
        before = {"params.running_mean": m.running_mean.float().clone(),
                  "params.running_var": m.running_var.float().clone()}
        run(name, m, torch.randn(4, 3, 3, 2) * 2 + 0.5, train=train, randomize_params=False,
            extra=lambda mm: {**stats(mm)})
        # Overwrite the stored buffers with their values before the step.
        from safetensors.torch import load_file
        path = os.path.join(OUT, f"{name}.safetensors")
        d = load_file(path)
        d.update(before)
        save_file(d, path)

    bn("batch_norm_train", True)
    bn("batch_norm_eval", False)


def attention_fixtures():
    attn = Attention(8, heads=2, dim_head=4, rescale_output_factor=1.5, eps=1e-6,
                     norm_num_groups=2, residual_connection=True, bias=True,
                     upcast_softmax=True, _from_deprecated_attn_block=True)
    run("attention", attn, torch.randn(2, 8, 3, 5))


def resnet_fixtures():
    run("resnet_temb", ResnetBlock2D(in_channels=4, out_channels=6, temb_channels=5, groups=2,
                                     groups_out=3, eps=1e-6, output_scale_factor=2.0),
        torch.randn(2, 4, 5, 4), temb=torch.randn(2, 5))
    run("resnet_scale_shift", ResnetBlock2D(in_channels=4, out_channels=6, temb_channels=5,
                                            groups=2, eps=1e-6,
                                            time_embedding_norm="scale_shift"),
        torch.randn(2, 4, 5, 4), temb=torch.randn(2, 5))
    run("resnet_no_temb", ResnetBlock2D(in_channels=4, out_channels=4, temb_channels=None,
                                        groups=2, eps=1e-6),
        torch.randn(2, 4, 4, 4))


def sampling_fixtures():
    run("downsample_pad0", Downsample2D(4, use_conv=True, out_channels=5, padding=0),
        torch.randn(2, 4, 8, 6))
    run("downsample_pad1", Downsample2D(4, use_conv=True, out_channels=5, padding=1),
        torch.randn(2, 4, 8, 6))
    run("downsample_avgpool", Downsample2D(4, use_conv=False, out_channels=4),
        torch.randn(2, 4, 8, 6))
    run("upsample", Upsample2D(4, use_conv=True, out_channels=3), torch.randn(2, 4, 3, 5))


def embedding_fixtures():
    ts = torch.tensor([0.0, 1.0, 17.0, 250.0, 999.0])
    for name, (dim, flip, shift) in {
        "timesteps_unet": (32, True, 0.0),
        "timesteps_default": (32, False, 1.0),
        "timesteps_odd": (7, True, 1.0),
    }.items():
        y = Timesteps(dim, flip, shift)(ts)
        save_file({"timesteps": ts, "output": y.contiguous()}, os.path.join(OUT, f"{name}.safetensors"))
    run("timestep_embedding", TimestepEmbedding(6, 8), torch.randn(3, 6))


def mid_block_fixtures():
    run("mid_block_unet", UNetMidBlock2D(in_channels=8, temb_channels=5, resnet_groups=2,
                                         attention_head_dim=4, resnet_eps=1e-6),
        torch.randn(2, 8, 4, 3), temb=torch.randn(2, 5))
    run("mid_block_vae", UNetMidBlock2D(in_channels=8, temb_channels=None, resnet_groups=2,
                                        attention_head_dim=8, resnet_eps=1e-6),
        torch.randn(2, 8, 4, 3))
    run("mid_block_no_attention", UNetMidBlock2D(in_channels=8, temb_channels=5, resnet_groups=2,
                                                 add_attention=False, resnet_eps=1e-6),
        torch.randn(2, 8, 4, 3), temb=torch.randn(2, 5))


def resampling_fixtures():
    x = f32_exact(torch.randn(2, 3, 5, 7))
    out = {
        "input": x.float(),
        "nearest2x": F.interpolate(x, scale_factor=2.0, mode="nearest"),
        "bilinear_9x13": F.interpolate(x, size=(9, 13), mode="bilinear", align_corners=True),
        "bilinear_10x14": F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True),
        "bilinear_3x4": F.interpolate(x, size=(3, 4), mode="bilinear", align_corners=True),
        "max_pool2": F.max_pool2d(x, 2),
        "avg_pool2": F.avg_pool2d(x, 2),
    }
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "resampling.safetensors"))


conv_fixtures()
norm_fixtures()
attention_fixtures()
resnet_fixtures()
sampling_fixtures()
embedding_fixtures()
mid_block_fixtures()
resampling_fixtures()
print("torch", torch.__version__, "diffusers", diffusers.__version__)
