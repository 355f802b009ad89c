"""DCGAN (Radford et al. 2015) sized for small images: transposed-conv generator, strided-conv
discriminator, batch norm, non-saturating BCE loss. Works for any size with sides divisible by 4.

Plus an encoder E that inverts the generator, for interpolation between real images and latent
vector arithmetic on class means (infer's `interpolate --input` and `arithmetic`). As in IcGAN
(Perarnau et al. 2016) it trains alongside G and D on G's own samples only: the squared error
between E(G(z)) and z, G(z) detached, on the first half (`encoder_share`) of the batch G has
just made. Cheap: one encoder pass over half a batch, about +14% step time on one CPU thread
(the whole batch cost +25% and, at half the learning rate, inverted no better); G's and D's
updates don't depend on it. A pixel loss G(E(x)) vs real x would need a second generator pass
with gradients through G at every step, so it was left out. Evaluation reports how well E
inverts G (`latent_mse`) and how well G(E(x)) reconstructs held-out real images (`recon_l1`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.blocks import AdversarialFamily, ConvDiscriminator, ConvGenerator, conv_encoder
from trainables.family import EvalResult, pixel_device, register_family, seeded_normal, update


class Encoder(nn.Module):
    """Image -> latent vector: the discriminator's layout with a linear head of `latent_dim`."""

    def __init__(self, latent_dim: int, channels: int, size, width: int):
        super().__init__()
        self.net = conv_encoder(channels, size, width, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_family
class DCGAN(AdversarialFamily):
    name = "dcgan"
    description = "DCGAN: conv generator and discriminator, non-saturating BCE loss, an encoder inverting G"
    default_dataset = "fashion_mnist"
    loss_names = ("loss_g", "loss_d", "d_real", "d_fake", "loss_e")
    metric_names = ("fid", "kid", "kid_std", "latent_mse", "recon_l1")
    metric_descriptions = {
        **AdversarialFamily.metric_descriptions,
        "loss_e": "encoder loss (latent regression), averaged since the last report",
        "latent_mse": "mean squared error of the encoder's latent for generated images against the latent they "
                      "came from",
        "recon_l1": "mean absolute pixel error of held-out images encoded then generated again",
    }
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "latent_dim": 64, "batch_size": 64, "width": 32,
                "lr_e": 2e-3, "encoder_share": 0.5, "diffaug": "none"}
    mutable = ("lr_g", "lr_d")
    side_multiple = 4  # two stride-2 downsamplings that the generator undoes
    inference_modes = ("sample", "interpolate", "arithmetic")

    def build(self, hp, info):
        self.check_data(info)
        channels, *size = info["shape"]
        return {"generator": ConvGenerator(hp["latent_dim"], channels, size, hp["width"]),
                "discriminator": ConvDiscriminator(channels, size, hp["width"]),
                "encoder": Encoder(hp["latent_dim"], channels, size, hp["width"])}

    def optimizers(self, modules, hp):
        return {**super().optimizers(modules, hp),
                "encoder": torch.optim.Adam(modules["encoder"].parameters(), lr=hp["lr_e"])}

    def train_step(self, modules, optimizers, batch, hp):
        logs, z, fake = self.adversarial_step(modules, optimizers, batch["x"], hp)
        m = max(1, round(len(z) * hp["encoder_share"]))
        loss_e = F.mse_loss(modules["encoder"](fake[:m].detach()).float(), z[:m])
        update(optimizers["encoder"], loss_e)
        return {**logs, "loss_e": loss_e.detach()}

    @torch.no_grad()
    def evaluate(self, modules, hp, evaluator, seed):
        z = seeded_normal((evaluator.n, hp["latent_dim"]), seed, pixel_device(modules))
        fake = self.decode(modules, z, hp)
        real = evaluator.real()
        scores = {**evaluator.quality(fake),
                  "latent_mse": F.mse_loss(self.encode(modules, fake, hp).float(), z).item(),
                  "recon_l1": F.l1_loss(self.decode(modules, self.encode(modules, real, hp), hp).float(), real).item()}
        return EvalResult(scores, fake[:64])

    @torch.no_grad()
    def encode(self, modules, images, hp):
        return torch.cat([modules["encoder"](chunk) for chunk in images.split(500)])
