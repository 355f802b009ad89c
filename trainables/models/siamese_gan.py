"""Siamese GAN: the discriminator is a Siamese network that compares a generated image with a real one.

Two weight-shared conv branches embed both images of a pair; a symmetric head scores from
(|a - b|, a * b) whether the pair is "same" (both real) or "different". The discriminator learns
that a real image and another real image of the batch (real, real') are the same and that (real,
fake) pairs differ; the generator learns to make its (real, fake) pairs score "same". The head
can only call a pair different by finding, in the embedding, what sets a fake apart from every
real image, so the generator's gradient pulls its samples' embeddings towards the real ones, a
learnt, relative signal akin to feature matching (Salimans et al. 2016).

The pair loss alone does train a generator (adv_weight = 0). On top of it, the shared embedding
also feeds the standard one-image adversarial head (non-saturating BCE, weight `adv_weight`,
default 1): an absolute "is this real" signal next to the pair head's relative one, with both
heads shaping the same features. The pair loss enters with weight `pair_weight`, which the
sweep searches, so a sweep finds how much the Siamese comparison should count.

With DDP each wrapped module runs one forward per backward: the discriminator embeds
cat(real, fake) in a single pass and scores all its pairs and images in that same call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.blocks import AdversarialFamily, ConvGenerator, conv_encoder, diff_augment, init_weights
from trainables.family import register_family, update


class SiameseDiscriminator(nn.Module):
    def __init__(self, channels: int, size, width: int, embed_dim: int):
        super().__init__()
        # DCGAN's discriminator body, ending in an embedding
        self.branch = nn.Sequential(*conv_encoder(channels, size, width, embed_dim), nn.LeakyReLU(0.2))
        self.pair_head = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.LeakyReLU(0.2), nn.Linear(embed_dim, 1))
        self.real_head = nn.Linear(embed_dim, 1)

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logit of "same" for pairs of embeddings; symmetric in a and b."""
        return self.pair_head(torch.cat([(a - b).abs(), a * b], 1)).squeeze(1)

    def forward(self, real: torch.Tensor, fake: torch.Tensor):
        """Logits of "same" for (real, real') and (real, fake) pairs, and "real" for every image
        (real first): both branches in one pass."""
        n = len(real)
        e = self.branch(torch.cat([real, fake]))
        e_real, e_fake = e[:n], e[n:]
        return (self.similarity(e_real, e_real.roll(1, 0)), self.similarity(e_real, e_fake),
                self.real_head(e).squeeze(1))


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float32))


@register_family
class SiameseGAN(AdversarialFamily):
    name = "siamese_gan"
    description = "Siamese GAN: a weight-shared pair discriminator scores (real, real') vs (real, fake) pairs"
    default_dataset = "fashion_mnist"
    loss_names = ("loss_g", "loss_d", "loss_pair", "same_real", "same_fake", "d_real", "d_fake")
    metric_descriptions = {
        **AdversarialFamily.metric_descriptions,
        "loss_pair": "Siamese pair (contrastive) loss",
        "same_real": "Siamese head's mean probability that two real images of a class are the same class",
        "same_fake": "Siamese head's mean probability that a generated image matches its class",
    }
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "latent_dim": 64, "embed_dim": 64, "pair_weight": 1.0,
                "adv_weight": 1.0, "batch_size": 64, "width": 32, "diffaug": "none"}
    mutable = ("lr_g", "lr_d")
    side_multiple = 4  # two stride-2 downsamplings that the generator undoes
    inference_modes = ("sample", "interpolate")

    def build(self, hp, info):
        self.check_data(info)
        channels, *size = info["shape"]
        return {"generator": init_weights(ConvGenerator(hp["latent_dim"], channels, size, hp["width"])),
                "discriminator": init_weights(SiameseDiscriminator(channels, size, hp["width"], hp["embed_dim"]))}

    def train_step(self, modules, optimizers, batch, hp):
        G, D = modules["generator"], modules["discriminator"]
        real = batch["x"]
        n = len(real)
        fake = G(torch.randn(n, hp["latent_dim"], device=real.device))
        real = diff_augment(real, hp["diffaug"])  # one draw for both of D's passes over the real images
        same, different, realness = D(real, diff_augment(fake.detach(), hp["diffaug"]))
        loss_pair = (bce(same, 1.0) + bce(different, 0.0)) / 2
        loss_adv = (bce(realness[:n], 1.0) + bce(realness[n:], 0.0)) / 2
        # every head's loss is in the sum (a weight may be 0): DDP expects gradients for all parameters
        loss_d = hp["pair_weight"] * loss_pair + hp["adv_weight"] * loss_adv
        update(optimizers["discriminator"], loss_d)

        _, different_g, realness_g = D(real, diff_augment(fake, hp["diffaug"]))
        loss_g = hp["pair_weight"] * bce(different_g, 1.0) + hp["adv_weight"] * bce(realness_g[n:], 1.0)
        update(optimizers["generator"], loss_g)
        p_real = torch.sigmoid(realness.detach().float())
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(), "loss_pair": loss_pair.detach(),
                "same_real": torch.sigmoid(same.detach().float()).mean(),
                "same_fake": torch.sigmoid(different.detach().float()).mean(),
                "d_real": p_real[:n].mean(), "d_fake": p_real[n:].mean()}
