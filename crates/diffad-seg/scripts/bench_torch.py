"""PyTorch reference timings for benches/seg.rs (docs/benchmarks.md).

The same network as diffad-seg's default DiscriminativeUNet (DRAEM's
DiscriminativeSubNetwork, 9 input channels, base width 64, 28.4M
parameters), batch 8 at 256x256, float32 on the CPU with
torch.set_num_threads(THREADS):

* forward: eval mode, no_grad, images/s
* train step: train-mode forward, DRAEM focal loss on softmax, backward,
  Adam step (lr 1e-3)

Usage:  python3 scripts/bench_torch.py [--threads 2] [--reps 5]
Prints the median (and min) seconds per call and images/s.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from draem_reference import Disc, focal_loss, weights_init  # noqa: E402


def timeit(fn, reps, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--width", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = Disc(9, args.width)
    net.apply(weights_init)
    x = torch.rand(args.batch, 9, args.size, args.size)
    m = (torch.rand(args.batch, 1, args.size, args.size) > 0.9).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def forward():
        net.eval()
        with torch.no_grad():
            net(x)

    def step():
        net.train()
        opt.zero_grad()
        loss = focal_loss(torch.softmax(net(x), 1), m)
        loss.backward()
        opt.step()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {args.size}x{args.size}, width {args.width}, "
          f"{sum(p.numel() for p in net.parameters())} parameters")
    med, best = timeit(forward, args.reps)
    print(f"forward (eval): median {med:.3f} s (min {best:.3f} s), "
          f"{args.batch / med:.2f} images/s")
    med, best = timeit(step, args.reps)
    print(f"train step: median {med:.3f} s (min {best:.3f} s), "
          f"{args.batch / med:.2f} images/s")


if __name__ == "__main__":
    main()
