"""Conditional GAN (Mirza & Osindero 2014) on DCGAN's conv generator and discriminator.

The condition is a class index (N,) or a multi-hot attribute vector (N, K) such as CelebA's 40
attributes. Each network embeds it (a lookup table for classes, a linear map of the 0/1 vector
for attributes): the generator sees cat(z, embedding); the discriminator sees the embedding
broadcast over the image as extra input channels. Fakes are generated for the real batch's own
labels, so the discriminator judges real and fake images under the same conditions.

Besides FID/KID, `label_accuracy` says how often the dataset's feature classifier recognises the
requested condition in a generated image: argmax accuracy for classes, the mean per-attribute
accuracy of (logit > 0) for attributes.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.blocks import AdversarialFamily, ConvDiscriminator, ConvGenerator, init_weights
from trainables.errors import BadInput
from trainables.family import EvalResult, pixel_device, register_family, seeded_normal


class LabelEmbedding(nn.Module):
    def __init__(self, num_classes: int, dim: int, multilabel: bool):
        super().__init__()
        self.multilabel = multilabel
        self.table = nn.Linear(num_classes, dim) if multilabel else nn.Embedding(num_classes, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y.float()) if self.multilabel else self.table(y.long())


class Generator(nn.Module):
    def __init__(self, latent_dim: int, embed_dim: int, num_classes: int, multilabel: bool,
                 channels: int, size, width: int):
        super().__init__()
        self.num_classes, self.multilabel = num_classes, multilabel
        self.embed = LabelEmbedding(num_classes, embed_dim, multilabel)
        self.net = ConvGenerator(latent_dim + embed_dim, channels, size, width)
        if multilabel:  # how often each attribute is on in the training labels (for unconditioned sampling)
            self.register_buffer("attribute_rate", torch.full((num_classes,), 0.5))
            self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.training and self.multilabel:  # a running mean, as batch norm keeps its statistics
            with torch.no_grad():
                self.batches_seen += 1
                self.attribute_rate.lerp_(y.float().mean(0), 1.0 / self.batches_seen.clamp(max=1000))
        return self.net(torch.cat([z, self.embed(y).to(z.dtype)], 1))


class Discriminator(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, multilabel: bool, channels: int, size, width: int):
        super().__init__()
        self.embed = LabelEmbedding(num_classes, embed_dim, multilabel)
        self.net = ConvDiscriminator(channels + embed_dim, size, width)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        planes = self.embed(y).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.net(torch.cat([x, planes], 1))


def label_accuracy(logits: torch.Tensor | None, labels: torch.Tensor, num_classes: int) -> float:
    """How often the classifier sees the requested label: argmax accuracy for class indices,
    mean per-attribute accuracy of (logit > 0) for multi-hot attributes. NaN without a classifier
    of these classes (Inception features, or another dataset's classifier)."""
    if logits is None or logits.shape[1] != num_classes:
        return float("nan")
    labels = labels.to(logits.device)
    hits = (logits > 0) == labels.bool() if labels.ndim == 2 else logits.argmax(1) == labels
    return hits.float().mean().item()


@register_family
class CGAN(AdversarialFamily):
    name = "cgan"
    description = "conditional GAN: DCGAN networks conditioned on class labels or multi-hot attributes"
    default_dataset = "fashion_mnist"
    metric_names = ("fid", "kid", "kid_std", "label_accuracy")
    metric_descriptions = {**AdversarialFamily.metric_descriptions, "label_accuracy": (
        "share of generated images that the feature classifier assigns the class they were asked for")}
    loss_names = ("loss_g", "loss_d", "d_real", "d_fake")
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "latent_dim": 64, "embed_dim": 16, "batch_size": 64,
                "width": 32, "diffaug": "none"}
    mutable = ("lr_g", "lr_d")
    side_multiple = 4  # two stride-2 downsamplings that the generator undoes
    conditional = True

    def build(self, hp, info):
        self.check_data(info)
        channels, *size = info["shape"]
        k, multi = len(info["classes"]), bool(info["multilabel"])
        return {"generator": init_weights(Generator(hp["latent_dim"], hp["embed_dim"], k, multi, channels, size,
                                                    hp["width"])),
                "discriminator": init_weights(Discriminator(hp["embed_dim"], k, multi, channels, size, hp["width"]))}

    def evaluate(self, modules, hp, evaluator, seed):
        """FID/KID for the held-out labels (matched label distributions) and their label accuracy;
        the grid shows one row per class (8 samples each) when there are few classes."""
        fake = self.generate(modules, evaluator.n, hp, seed, labels=evaluator.labels)
        k = modules["generator"].num_classes
        scores = {**evaluator.quality(fake), "label_accuracy": label_accuracy(evaluator.classify(fake),
                                                                              evaluator.labels, k)}
        if evaluator.multilabel or k > 16:
            return EvalResult(scores, fake[:64])
        rows = torch.arange(k, device=evaluator.labels.device).repeat_interleave(8)
        return EvalResult(scores, self.generate(modules, len(rows), hp, seed, labels=rows), nrow=8)

    @torch.no_grad()
    def generate(self, modules, n, hp, seed, labels=None):
        """`labels`: class indices (n,) or multi-hot attributes (n, K); None draws them (seeded):
        classes uniformly, attributes independently at the rates seen in training."""
        G = modules["generator"]
        device, k = pixel_device(modules), G.num_classes
        rng = torch.Generator().manual_seed(seed + 1)
        if G.multilabel:
            if labels is None:
                labels = torch.bernoulli(G.attribute_rate.cpu().expand(n, k), generator=rng).to(torch.uint8)
            elif labels.shape != (n, k):
                raise BadInput(f"cgan: expected {n} multi-hot attribute vectors of length {k}, got shape "
                               f"{tuple(labels.shape)}")
        else:
            if labels is None:
                labels = torch.randint(k, (n,), generator=rng)
            elif labels.shape != (n,) or labels.is_floating_point() or labels.min() < 0 or labels.max() >= k:
                raise BadInput(f"cgan: expected {n} class indices in 0..{k - 1}, got shape {tuple(labels.shape)}")
        z = seeded_normal((n, hp["latent_dim"]), seed, device)
        labels = labels.to(device)
        return torch.cat([G(zc, yc) for zc, yc in zip(z.split(500), labels.split(500))])
