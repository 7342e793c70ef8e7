"""Reference values for diffad-seg's tests, computed with PyTorch.

Writes tests/fixtures/*.safetensors (small, committed), so the Rust tests need
no Python:

* bilinear.safetensors  - F.interpolate(mode="bilinear", align_corners=True)
* focal.safetensors     - DRAEM's focal loss on softmax(logits) and its
                          gradient with respect to the logits
* unet_tiny.safetensors - a base-width-2 DRAEM DiscriminativeSubNetwork
                          (state dict with DRAEM's names), an input, its
                          logits in eval and train mode, the BatchNorm running
                          statistics after the train-mode pass, gradients of
                          the focal loss, and the weights after one Adam step

Run from the crate root:  python3 scripts/make_fixtures.py
"""

import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from draem_reference import Disc, focal_loss, weights_init

torch.set_num_threads(1)
torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
os.makedirs(OUT, exist_ok=True)


# --- bilinear upsampling, align_corners=True --------------------------------
bil = {}
for name, shape, size in [("a", (2, 3, 5, 7), (10, 14)), ("b", (1, 2, 4, 4), (8, 8)),
                          ("c", (1, 1, 3, 6), (7, 2))]:
    x = torch.randn(*shape)
    bil[f"{name}.x"] = x
    bil[f"{name}.y"] = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
save_file(bil, os.path.join(OUT, "bilinear.safetensors"))

# --- focal loss ---------------------------------------------------------------
foc = {}
cases = [("default", 2.0, None, 1e-5), ("alpha", 2.0, [0.25, 0.75], 1e-5),
         ("nosmooth", 0.5, None, 0.0)]
logits = (torch.randn(2, 2, 6, 5) * 3.0)
mask = (torch.rand(2, 1, 6, 5) > 0.6).float()
foc["logits"] = logits.clone()
foc["mask"] = mask
for name, gamma, alpha, smooth in cases:
    lg = logits.clone().requires_grad_(True)
    loss = focal_loss(torch.softmax(lg, 1), mask, gamma, alpha, smooth)
    loss.backward()
    foc[f"{name}.loss"] = loss.detach().reshape(1)
    foc[f"{name}.grad"] = lg.grad.clone()
save_file(foc, os.path.join(OUT, "focal.safetensors"))


torch.manual_seed(1)
net = Disc(9, 2)
net.apply(weights_init)
state = {k: v.clone() for k, v in net.state_dict().items()}
# Give the running statistics non-trivial values so eval mode is tested.
for k in state:
    if k.endswith("running_mean"):
        state[k] = torch.randn_like(state[k]) * 0.1
    if k.endswith("running_var"):
        state[k] = torch.rand_like(state[k]) + 0.5
net.load_state_dict(state)

fx = {}
for k, v in state.items():
    fx[f"state.{k}"] = v  # includes num_batches_tracked (int64), to be skipped
x = torch.randn(2, 9, 32, 32)
m = (torch.rand(2, 1, 32, 32) > 0.7).float()
fx["input"] = x
fx["mask"] = m
net.eval()
with torch.no_grad():
    fx["logits_eval"] = net(x)
net.train()
logits = net(x)
fx["logits_train"] = logits.detach()
for k, v in net.state_dict().items():
    if k.endswith("running_mean") or k.endswith("running_var"):
        fx[f"after_train.{k}"] = v.clone()
loss = focal_loss(torch.softmax(logits, 1), m)
fx["loss_train"] = loss.detach().reshape(1)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
opt.zero_grad()
loss.backward()
for k, p in net.named_parameters():
    fx[f"grad.{k}"] = p.grad.clone()
opt.step()
for k, p in net.named_parameters():
    fx[f"after_step.{k}"] = p.detach().clone()
save_file(fx, os.path.join(OUT, "unet_tiny.safetensors"))

print("param count, default config (9 in, base 64):",
      sum(p.numel() for p in Disc(9, 64).parameters()))
