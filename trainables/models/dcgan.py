"""DCGAN (Radford et al. 2015) sized for small images: transposed-conv generator, strided-conv
discriminator, batch norm, non-saturating BCE loss. Works for any square size divisible by 4."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.family import ModelFamily, pixel_device, register_family, seeded_normal


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
class DCGAN(ModelFamily):
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
