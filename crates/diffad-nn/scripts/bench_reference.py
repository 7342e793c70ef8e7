"""PyTorch timings for the shapes of `benches/nn.rs` (same machine, 2 threads).

Run:  python3 crates/diffad-nn/scripts/bench_reference.py [batch]
Prints the median and min over repeated runs (after a warm-up) of
* conv3x3 forward and forward+backward (input and weight gradients), f32, padding 1;
* diffusers ResnetBlock2D (c256, temb 1024) and Attention (c256, heads of 32) at 32x32.
"""

import sys
import time

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor
from diffusers.models.resnet import ResnetBlock2D

torch.set_num_threads(2)
torch.manual_seed(0)
B = int(sys.argv[1]) if len(sys.argv) > 1 else 8


def timeit(fn, min_runs=5, min_time=3.0):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], times[0], len(times)


def report(name, fn):
    med, best, n = timeit(fn)
    print(f"{name:45s} median {med * 1e3:10.1f} ms   min {best * 1e3:10.1f} ms   ({n} runs)", flush=True)


def fwd_bwd(module_fn, x, r):
    def step():
        y = module_fn(x)
        (y * r).sum().backward()
    return step


for ch, hw in [(256, 32), (512, 16), (1024, 8), (64, 256)]:
    conv = torch.nn.Conv2d(ch, ch, 3, padding=1)
    x = torch.rand(B, ch, hw, hw) * 2 - 1
    with torch.no_grad():
        report(f"conv3x3_fwd b{B}_c{ch}_{hw}x{hw}", lambda: conv(x))
    xg = x.clone().requires_grad_(True)
    r = torch.rand(B, ch, hw, hw)
    report(f"conv3x3_fwd_bwd b{B}_c{ch}_{hw}x{hw}", fwd_bwd(conv, xg, r))

ch, hw = 256, 32
x = (torch.rand(B, ch, hw, hw) * 2 - 1).requires_grad_(True)
r = torch.rand(B, ch, hw, hw)
temb = torch.rand(B, 1024)
block = ResnetBlock2D(in_channels=ch, out_channels=ch, temb_channels=1024, eps=1e-6)
with torch.no_grad():
    report(f"resnet_block2d fwd b{B}_c{ch}_{hw}x{hw}", lambda: block(x, temb))
report(f"resnet_block2d fwd_bwd b{B}_c{ch}_{hw}x{hw}", fwd_bwd(lambda t: block(t, temb), x, r))

for label, proc in [("sdpa", None), ("plain", AttnProcessor())]:
    attn = Attention(ch, heads=ch // 32, dim_head=32, norm_num_groups=32, eps=1e-6,
                     residual_connection=True, bias=True, upcast_softmax=True,
                     _from_deprecated_attn_block=True)
    if proc is not None:
        attn.set_processor(proc)
    with torch.no_grad():
        report(f"attention({label}) fwd b{B}_c{ch}_{hw}x{hw}", lambda: attn(x))
    report(f"attention({label}) fwd_bwd b{B}_c{ch}_{hw}x{hw}", fwd_bwd(attn, x, r))

print("torch", torch.__version__, "threads", torch.get_num_threads())
