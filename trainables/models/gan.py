"""GAN (Goodfellow et al. 2014) with multilayer perceptrons, as in the paper's MNIST model: the
generator maps noise through LeakyReLU layers to tanh pixels, the discriminator maps flattened
pixels through LeakyReLU layers to one logit; non-saturating BCE loss. Any image shape works."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.blocks import AdversarialFamily, init_weights
from trainables.family import register_family


class Generator(nn.Module):
    """z -> hidden -> 2 hidden -> pixels; batch norm on the hidden layers keeps an MLP generator
    from collapsing early (as most MLP GAN implementations do)."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, math.prod(shape)), nn.Tanh(), nn.Unflatten(1, tuple(shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(shape), 2 * hidden), nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


@register_family
class GAN(AdversarialFamily):
    name = "gan"
    description = "GAN: MLP generator and discriminator (LeakyReLU, tanh output), non-saturating BCE loss"
    default_dataset = "fashion_mnist"
    loss_names = ("loss_g", "loss_d", "d_real", "d_fake")
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "latent_dim": 64, "hidden": 256, "batch_size": 64,
                "diffaug": "none"}
    mutable = ("lr_g", "lr_d")
    inference_modes = ("sample", "interpolate")

    def build(self, hp, info):
        shape = tuple(info["shape"])
        return {"generator": init_weights(Generator(hp["latent_dim"], shape, hp["hidden"])),
                "discriminator": init_weights(Discriminator(shape, hp["hidden"]))}
