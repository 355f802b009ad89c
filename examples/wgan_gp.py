"""A model family of your own, outside the package: WGAN-GP (Gulrajani et al. 2017), a critic
without batch norm trained on the Wasserstein loss with a gradient penalty, n_critic critic
updates per generator update. Sweep it with

    python -m orchestrator.sweep wgan_gp --family-module examples/wgan_gp.py --quick

Its search space is wgan_gp.toml beside this file. See docs/extending.md for the contract.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.blocks import ConvDiscriminator, ConvGenerator, check_side
from trainables.family import NON_NEGATIVE, SIZE, ModelFamily, pixel_device, register_family, seeded_normal, update


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(||grad critic(x_hat)|| - 1)^2 on random interpolates of real and generated images."""
    mix = torch.rand(len(real), 1, 1, 1, device=real.device)
    x_hat = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


@register_family
class WGANGP(ModelFamily):
    name = "wgan_gp"
    description = "WGAN-GP: conv generator, critic with a gradient penalty, Wasserstein loss"
    default_dataset = "fashion_mnist"
    loss_names = ("loss_g", "loss_critic", "wasserstein", "penalty")
    metric_descriptions = {
        **ModelFamily.metric_descriptions,
        "loss_g": "generator loss: minus the critic's mean score of generated images",
        "loss_critic": "critic loss: Wasserstein estimate plus the weighted gradient penalty",
        "wasserstein": "critic's mean score of real minus generated images (higher: easier to tell apart)",
        "penalty": "gradient penalty, before its weight",
    }
    defaults = {"lr_g": 1e-4, "lr_d": 3e-4, "latent_dim": 64, "width": 32, "batch_size": 64,
                "n_critic": 2, "gp_weight": 10.0}
    mutable = ("lr_g", "lr_d")  # what PBT may mutate
    bounds = {"n_critic": SIZE, "gp_weight": NON_NEGATIVE}  # checked before Ray starts (lr_*: shared bounds)

    def build(self, hp, info):
        check_side(self.name, info["shape"], 4)  # two stride-2 steps each way
        channels, *size = info["shape"]
        return {"generator": ConvGenerator(hp["latent_dim"], channels, size, hp["width"]),
                "critic": ConvDiscriminator(channels, size, hp["width"])}  # one unbounded score, no batch norm

    def optimizers(self, modules, hp):
        betas = (0.0, 0.9)  # the paper's
        return {"generator": torch.optim.Adam(modules["generator"].parameters(), lr=hp["lr_g"], betas=betas),
                "critic": torch.optim.Adam(modules["critic"].parameters(), lr=hp["lr_d"], betas=betas)}

    def train_step(self, modules, optimizers, batch, hp):
        G, critic = modules["generator"], modules["critic"]
        for real in batch["x"].chunk(hp["n_critic"]):  # n_critic critic updates on parts of the batch
            fake = G(torch.randn(len(real), hp["latent_dim"], device=real.device)).detach()
            wasserstein = critic(real).mean() - critic(fake).mean()
            penalty = gradient_penalty(critic, real, fake)
            loss_critic = -wasserstein + hp["gp_weight"] * penalty
            update(optimizers["critic"], loss_critic)
        loss_g = -critic(G(torch.randn(len(batch["x"]), hp["latent_dim"], device=batch["x"].device))).mean()
        update(optimizers["generator"], loss_g)
        return {"loss_g": loss_g.detach(), "loss_critic": loss_critic.detach(),
                "wasserstein": wasserstein.detach(), "penalty": penalty.detach()}

    @torch.no_grad()
    def generate(self, modules, n, hp, seed, labels=None):
        z = seeded_normal((n, hp["latent_dim"]), seed, pixel_device(modules))
        return torch.cat([modules["generator"](chunk) for chunk in z.split(500)])
