"""Sketch -> image with a paired conditional GAN (pix2pix's recipe, Isola et al. 2017, through a
latent bottleneck): an encoder maps the sketch to a `latent_dim` vector, a generator decodes it
to the image, trained on a conditional discriminator's verdict + lambda_l1 * L1 to the true image.

The discriminator sees the sketch together with an image (channels concatenated) and scores
patches (PatchGAN), so it judges whether the image fits *this* sketch, not only whether it looks
real. Works for any size with sides divisible by 4; sketch and image may differ in channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from trainables.blocks import (ADVERSARIAL_LOSSES, check_domain_sides, diff_augment, diffaug_policies, grid_rows,
                               init_weights, patch_discriminator, sides, two_adams)
from trainables.family import EvalResult, ModelFamily, Unsupported, register_family, update


class SketchToImage(nn.Module):
    """sketch -> encoder -> latent vector -> generator -> image in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, size, latent_dim: int, width: int):
        super().__init__()
        height, wide = sides(size)
        inner = (2 * width, height // 4, wide // 4)
        flat = inner[0] * inner[1] * inner[2]
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(flat, latent_dim))
        self.generator = nn.Sequential(
            nn.Linear(latent_dim, flat, bias=False), nn.BatchNorm1d(flat), nn.ReLU(), nn.Unflatten(1, inner),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, sketch: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encoder(sketch))


class ConditionalDiscriminator(nn.Module):
    """PatchGAN over (sketch, image) pairs: one real/fake logit per overlapping patch."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.net = patch_discriminator(channels, width)

    def forward(self, sketch: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([sketch, image], dim=1))


def augment_pairs(sketch: torch.Tensor, image: torch.Tensor, policy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffAugment of the (sketch, image) pairs D sees: the image's colour alone, and one shift and
    one cutout for both images of a pair, so the sketch still fits its image."""
    names = diffaug_policies(policy)
    if "color" in names:
        image = diff_augment(image, "color")
    spatial = "+".join(n for n in names if n not in ("color", "none"))
    if spatial:
        pair = diff_augment(torch.cat([sketch, image], dim=1), spatial)
        sketch, image = pair[:, :sketch.shape[1]], pair[:, sketch.shape[1]:]
    return sketch, image


@register_family
class Sketch2Image(ModelFamily):
    name = "sketch2image"
    description = "paired conditional GAN: sketch -> encoder -> latent -> generator, adversarial + L1 loss"
    default_dataset = "fashion_mnist_edges"
    data_kind = "paired"
    metric_names = ("fid", "kid", "kid_std", "l1", "ssim")
    loss_names = ("loss_g", "loss_d", "loss_l1", "d_real", "d_fake")
    metric_descriptions = {
        **ModelFamily.metric_descriptions, **ADVERSARIAL_LOSSES,
        "l1": "mean absolute pixel error of the translation against the paired target",
        "ssim": "structural similarity of the translation to the paired target (higher is better)",
        "loss_l1": "L1 term of the generator's loss (translation against its target)",
    }
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "latent_dim": 128, "lambda_l1": 100.0,
                "width": 32, "width_d": 32, "batch_size": 64, "diffaug": "none"}
    mutable = ("lr_g", "lr_d")
    inference_modes = ("translate",)
    inference_module = "translator"

    def check_data(self, info):
        super().check_data(info)
        check_domain_sides(self.name, info, 4)

    def build(self, hp, info):
        channels_a, size = info["shape_a"][0], info["shape"][1:]
        return {"translator": init_weights(SketchToImage(channels_a, info["shape"][0], size, int(hp["latent_dim"]),
                                                         int(hp["width"]))),
                "discriminator": init_weights(ConditionalDiscriminator(channels_a + info["shape"][0],
                                                                       int(hp["width_d"])))}

    def optimizers(self, modules, hp):
        return two_adams(modules, hp, "translator", "discriminator")

    def train_step(self, modules, optimizers, batch, hp):
        T, discriminator = modules["translator"], modules["discriminator"]
        sketch, real = batch["a"], batch["x"]
        fake = T(sketch)

        def D(sketches, images):  # DiffAugment of every pair the discriminator sees, real and fake
            return discriminator(*augment_pairs(sketches, images, hp.get("diffaug", "none")))

        # one discriminator pass over real and fake pairs together: DDP wants one forward per backward
        real_logits, fake_logits = D(torch.cat([sketch, sketch]), torch.cat([real, fake.detach()])).float().chunk(2)
        loss_d = 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                        + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        update(optimizers["discriminator"], loss_d)

        logits = D(sketch, fake).float()
        loss_adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        loss_l1 = (fake.float() - real).abs().mean()
        update(optimizers["translator"], loss_adv + hp["lambda_l1"] * loss_l1)
        return {"loss_g": loss_adv.detach(), "loss_d": loss_d.detach(), "loss_l1": loss_l1.detach(),
                "d_real": torch.sigmoid(real_logits.detach()).mean(),
                "d_fake": torch.sigmoid(fake_logits.detach()).mean()}

    def evaluate(self, modules, hp, evaluator, seed):
        """FID/KID of translated held-out sketches against held-out images; on aligned pairs also
        L1 (mean absolute pixel error, [-1, 1] scale) and SSIM to the true image.
        samples.png: blocks of rows sketch, translation, true image."""
        sketches, real = evaluator.real("a"), evaluator.real("x")
        fake = self.translate(modules, sketches, hp).float()
        scores = evaluator.quality(fake, "x")
        if evaluator.paired:
            scores["l1"] = float((fake - real).abs().mean())
            scores["ssim"] = float(structural_similarity_index_measure((fake + 1) / 2, (real + 1) / 2, data_range=1.0))
        return EvalResult(scores, grid_rows(sketches, fake, real), nrow=8)

    def inference_call(self, modules, hp, evaluator, n):
        images = evaluator.real("a")[:n]
        return (lambda: self.translate(modules, images, hp)), len(images)

    @torch.no_grad()
    def translate(self, modules, images, hp, direction="a2b"):
        if direction != "a2b":
            raise Unsupported(f"{self.name} translates sketches to images only (a2b), not {direction}")
        return torch.cat([modules["translator"](chunk) for chunk in images.split(500)])
