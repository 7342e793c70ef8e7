"""DRAEM's discriminative sub-network and focal loss in PyTorch, written from
the architecture description (docs/reference.md §4, DRAEM model_unet.py /
loss.py), with DRAEM's state-dict names. Used by make_fixtures.py and
bench_torch.py."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def focal_loss(probs, target, gamma=2.0, alpha=None, smooth=1e-5):
    """DRAEM's FocalLoss (loss.py) as DiffAD calls it: on softmax probabilities,
    target = class indices (B, 1, H, W)."""
    c = probs.shape[1]
    p = probs.permute(0, 2, 3, 1).reshape(-1, c)
    idx = target.reshape(-1, 1).long()
    if alpha is None:
        a = torch.ones(c, 1)
    else:
        a = torch.tensor(alpha, dtype=torch.float32).view(c, 1)
        a = a / a.sum()
    onehot = torch.zeros(p.shape[0], c).scatter_(1, idx, 1)
    if smooth:
        onehot = torch.clamp(onehot, smooth / (c - 1), 1.0 - smooth)
    pt = (onehot * p).sum(1) + smooth
    a = torch.squeeze(a[idx])
    loss = -1 * a * torch.pow(1 - pt, gamma) * pt.log()
    return loss.mean()


def cbr(i, o):
    return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]


class Encoder(nn.Module):
    def __init__(self, cin, w):
        super().__init__()
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        prev = cin
        for k, c in enumerate(widths):
            setattr(self, f"block{k + 1}", nn.Sequential(*cbr(prev, c), *cbr(c, c)))
            prev = c

    def forward(self, x):
        outs = []
        for k in range(6):
            if k > 0:
                x = F.max_pool2d(x, 2)
            x = getattr(self, f"block{k + 1}")(x)
            outs.append(x)
        return outs


class Decoder(nn.Module):
    NAMES = [("up_b", "db_b"), ("up1", "db1"), ("up2", "db2"), ("up3", "db3"), ("up4", "db4")]

    def __init__(self, w, cout):
        super().__init__()
        levels = [(8 * w, 8 * w, 8 * w), (8 * w, 4 * w, 8 * w), (4 * w, 2 * w, 4 * w),
                  (2 * w, w, 2 * w), (w, w, w)]
        for (up, db), (i, o, s) in zip(self.NAMES, levels):
            setattr(self, up, nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *cbr(i, o)))
            setattr(self, db, nn.Sequential(*cbr(o + s, o), *cbr(o, o)))
        self.fin_out = nn.Sequential(nn.Conv2d(w, cout, 3, padding=1))

    def forward(self, skips):
        h = skips[-1]
        for k, (up, db) in enumerate(self.NAMES):
            u = getattr(self, up)(h)
            h = getattr(self, db)(torch.cat((u, skips[-2 - k]), 1))
        return self.fin_out(h)


class Disc(nn.Module):
    def __init__(self, cin, w, cout=2):
        super().__init__()
        self.encoder_segment = Encoder(cin, w)
        self.decoder_segment = Decoder(w, cout)

    def forward(self, x):
        return self.decoder_segment(self.encoder_segment(x))


def weights_init(m):  # DRAEM's init
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        m.weight.data.normal_(0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)
