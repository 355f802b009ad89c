"""GAN (Goodfellow et al. 2014) with multilayer perceptrons, as in the paper's MNIST model: the
generator maps noise through LeakyReLU layers to tanh pixels, the discriminator maps flattened
pixels through LeakyReLU layers to one logit; non-saturating BCE loss. Any image shape works."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.blocks import init_weights
from trainables.family import ModelFamily, pixel_device, register_family, seeded_normal


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
class GAN(ModelFamily):
    name = "gan"
    description = "GAN: MLP generator and discriminator (LeakyReLU, tanh output), non-saturating BCE loss"
    default_dataset = "fashion_mnist"
    loss_names = ("loss_g", "loss_d", "d_real", "d_fake")
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "latent_dim": 64, "hidden": 256, "batch_size": 64}
    mutable = ("lr_g", "lr_d")
    inference_modes = ("sample", "interpolate")

    def build(self, hp, info):
        shape = tuple(info["shape"])
        return {"generator": init_weights(Generator(hp["latent_dim"], shape, hp["hidden"])),
                "discriminator": init_weights(Discriminator(shape, hp["hidden"]))}

    def optimizers(self, modules, hp):
        betas = (hp["beta1"], 0.999)
        return {"generator": torch.optim.Adam(modules["generator"].parameters(), lr=hp["lr_g"], betas=betas),
                "discriminator": torch.optim.Adam(modules["discriminator"].parameters(), lr=hp["lr_d"], betas=betas)}

    def train_step(self, modules, optimizers, batch, hp):
        G, D = modules["generator"], modules["discriminator"]
        real = batch["x"]
        n = len(real)
        fake = G(torch.randn(n, hp["latent_dim"], device=real.device))
        # one discriminator pass over real and fake together: DDP wants one forward per backward
        logits = D(torch.cat([real, fake.detach()]))
        target = torch.cat([torch.ones(n, device=real.device), torch.zeros(n, device=real.device)])
        loss_d = F.binary_cross_entropy_with_logits(logits.float(), target)
        optimizers["discriminator"].zero_grad(set_to_none=True)
        loss_d.backward()
        optimizers["discriminator"].step()

        loss_g = F.binary_cross_entropy_with_logits(D(fake).float(), torch.ones(n, device=real.device))
        optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward()
        optimizers["generator"].step()
        probs = torch.sigmoid(logits.detach().float())
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(),
                "d_real": probs[:n].mean(), "d_fake": probs[n:].mean()}

    @torch.no_grad()
    def generate(self, modules, n, hp, seed, labels=None):
        return self.decode(modules, seeded_normal((n, hp["latent_dim"]), seed, pixel_device(modules)), hp)

    @torch.no_grad()
    def decode(self, modules, z, hp):
        return torch.cat([modules["generator"](chunk) for chunk in z.split(500)])
