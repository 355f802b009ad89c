"""Pieces several model families share, written once."""

from __future__ import annotations

import copy
import random

import torch
from torch import nn


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """DCGAN/pix2pix initialisation: conv and linear weights ~ N(0, std), norm scales ~ N(1, std)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


class ImagePool:
    """A buffer of past generated images (Shrivastava et al. 2017, as CycleGAN uses): the
    discriminator sees a mix of new fakes and older ones, which damps oscillation."""

    def __init__(self, size: int = 50, seed: int = 0):
        self.size, self.images, self.rng = size, [], random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.random() < 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i])
                self.images[i] = image
            else:
                out.append(image)
        return torch.stack(out)


class EMA(nn.Module):
    """An exponential moving average of a module's weights (a module itself, so it is saved and
    restored with the others). `update` after each optimiser step; sample from `.module`."""

    def __init__(self, module: nn.Module, decay: float = 0.999):
        super().__init__()
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        source = getattr(source, "module", source)  # unwrap DDP
        self.updates += 1
        decay = min(self.decay, (1 + self.updates.item()) / (10 + self.updates.item()))  # warm-up
        for ema, live in zip(self.module.state_dict().values(), source.state_dict().values()):
            if ema.dtype.is_floating_point:
                ema.lerp_(live.detach(), 1 - decay)
            else:
                ema.copy_(live)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
