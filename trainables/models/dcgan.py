"""DCGAN (Radford et al. 2015) sized for small images: transposed-conv generator, strided-conv
discriminator, batch norm, non-saturating BCE loss. Works for any square size divisible by 4."""

from __future__ import annotations

import torch
from torch import nn

from trainables.blocks import AdversarialFamily
from trainables.family import register_family


class Generator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, size: int, width: int):
        super().__init__()
        self.latent_dim, self.start = latent_dim, size // 4
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * self.start ** 2, bias=False),
            nn.BatchNorm1d(2 * width * self.start ** 2), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(len(z), -1, self.start, self.start))


class Discriminator(nn.Module):
    def __init__(self, channels: int, size: int, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


@register_family
class DCGAN(AdversarialFamily):
    name = "dcgan"
    description = "DCGAN: conv generator and discriminator, non-saturating BCE loss"
    default_dataset = "fashion_mnist"
    loss_names = ("loss_g", "loss_d", "d_real", "d_fake")
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "latent_dim": 64, "batch_size": 64, "width": 32}

    mutable = ("lr_g", "lr_d")

    def build(self, hp, info):
        shape = tuple(info["shape"])
        channels, size, _ = shape
        if size % 4 or shape[1] != shape[2]:
            raise ValueError(f"dcgan needs square images with a side divisible by 4, got {shape}")
        return {"generator": Generator(hp["latent_dim"], channels, size, hp["width"]),
                "discriminator": Discriminator(channels, size, hp["width"])}
