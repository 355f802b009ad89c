"""Pieces several model families share, written once."""

from __future__ import annotations

import copy
import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import BadInput
from trainables.family import ModelFamily, pixel_device, seeded_normal, update


# --- what the conv families need of their images -------------------------------------------------

def check_side(family: str, shape, multiple: int) -> None:
    """Refuse images whose sides `multiple` does not divide (e.g. 4: two stride-2 downsamplings that
    the upsampling must undo exactly). Height and width may differ (e.g. 64x128 signatures)."""
    _, height, width = shape
    if height % multiple or width % multiple:
        raise BadInput(f"{family} needs image sides divisible by {multiple} (its stride product), got {height}x{width}; "
                       f"choose another --image-size")


def sides(size) -> tuple[int, int]:
    """A module's image size: a side N (square) or (height, width)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_domain_sides(family: str, info: dict, multiple: int) -> None:
    """Two-domain data for a translator: both domains of one size, with sides that `multiple` divides."""
    shape_a, shape_b = list(info["shape_a"] or info["shape"]), list(info["shape"])
    check_side(family, shape_a, multiple)
    check_side(family, shape_b, multiple)
    if shape_a[1:] != shape_b[1:]:
        raise BadInput(f"{family} needs both domains of one image size; dataset {info['name']!r} has "
                       f"{shape_a} -> {shape_b}")


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


def grid_rows(*rows: torch.Tensor, blocks: int = 4, nrow: int = 8) -> torch.Tensor:
    """Blocks of `nrow`-image rows, one row per tensor: inputs[0:8], outputs[0:8], ..., inputs[8:16] ..."""
    blocks = max(1, min(blocks, len(rows[0]) // nrow))
    return torch.cat([r[k * nrow:(k + 1) * nrow] for k in range(blocks) for r in rows])


# --- GAN networks and optimisers -----------------------------------------------------------------

class ConvGenerator(nn.Module):
    """DCGAN's generator (Radford et al. 2015): a linear projection of z to 2 * width maps of a
    quarter of each side, then two stride-2 transposed convs to `channels` maps in [-1, 1].
    `size`: a side N or (height, width)."""

    def __init__(self, latent_dim: int, channels: int, size, width: int):
        super().__init__()
        height, wide = sides(size)
        self.latent_dim, self.start = latent_dim, (height // 4, wide // 4)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * self.start[0] * self.start[1], bias=False),
            nn.BatchNorm1d(2 * width * self.start[0] * self.start[1]), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(len(z), -1, *self.start))


def conv_encoder(channels: int, size, width: int, out_features: int) -> nn.Sequential:
    """DCGAN's discriminator body: two stride-2 convs, then a linear map to `out_features` (one
    logit, a latent vector or an embedding). `size`: a side N or (height, width)."""
    height, wide = sides(size)
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(2 * width * (height // 4) * (wide // 4), out_features))


class ConvDiscriminator(nn.Module):
    """DCGAN's discriminator: one real/fake logit per image."""

    def __init__(self, channels: int, size, width: int):
        super().__init__()
        self.net = conv_encoder(channels, size, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def patch_discriminator(channels: int, width: int) -> nn.Sequential:
    """PatchGAN (pix2pix, CycleGAN): one real/fake logit per overlapping patch."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.InstanceNorm2d(2 * width), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 3, 1, 1), nn.InstanceNorm2d(4 * width), nn.LeakyReLU(0.2),
        nn.Conv2d(4 * width, 1, 3, 1, 1))


def two_adams(modules: dict[str, nn.Module], hp: dict, generator: str, discriminator: str) -> dict:
    """Adam for the module named `generator` (lr_g) and the one named `discriminator` (lr_d), both
    with betas (beta1, 0.999), as the GAN papers these families follow train."""
    betas = (hp["beta1"], 0.999)
    return {generator: torch.optim.Adam(modules[generator].parameters(), lr=hp["lr_g"], betas=betas),
            discriminator: torch.optim.Adam(modules[discriminator].parameters(), lr=hp["lr_d"], betas=betas)}


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


# --- U-Net pieces with time conditioning (DDPM; Ho et al. 2020, as lucidrains' denoising-diffusion-pytorch) ---

def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with as many groups (up to `groups`) as divide the channels."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class SinusoidalEmbedding(nn.Module):
    """Transformer position encoding of a (float) timestep: (N,) -> (N, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000) / (half - 1)))
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class TimeResBlock(nn.Module):
    """Residual block conditioned on a time embedding: norm-SiLU-conv twice, the embedding scaling and
    shifting the second norm's output (FiLM), plus a 1x1 conv shortcut when channels change."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int):
        super().__init__()
        self.conv1 = nn.Sequential(group_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_ch))
        self.norm2 = group_norm(out_ch)
        self.conv2 = nn.Sequential(nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        scale, shift = self.time(t_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(self.norm2(h) * (1 + scale) + shift)
        return h + self.skip(x)


class DownBlock(nn.Module):
    """A residual block, then (unless last) a stride-2 conv; returns (skip features, downsampled)."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, downsample: bool):
        super().__init__()
        self.block = TimeResBlock(in_ch, out_ch, time_dim)
        self.down = nn.Conv2d(out_ch, out_ch, 3, stride=2, padding=1) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.block(x, t_emb)
        return h, self.down(h)


class UpBlock(nn.Module):
    """Concatenates the matching skip features, a residual block, then (if `upsample_to`) nearest-neighbour
    upsampling and a conv to `upsample_to` channels (the next level's width)."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, time_dim: int, upsample_to: int | None = None):
        super().__init__()
        self.block = TimeResBlock(in_ch + skip_ch, out_ch, time_dim)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                nn.Conv2d(out_ch, upsample_to, 3, padding=1)) if upsample_to else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        return self.up(self.block(torch.cat([x, skip], dim=1), t_emb))


# --- DiffAugment: differentiable augmentation of D's inputs, for GANs on little data -------------------
# Zhao, Liu, Lin, Zhu and Han, "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS
# 2020; the three policies as their DiffAugment_pytorch.py (mit-han-lab/data-efficient-gans, BSD-2)
# has them. No maintained package ships it (kornia's augmentations are other transforms), so it is here.

def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(len(x), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)  # grey images: the identity
    return (x - mean) * (torch.rand(len(x), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(len(x), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Each image shifted by up to `ratio` of each side, the uncovered border zero."""
    n, _, height, width = x.shape
    reach = int(height * ratio + 0.5), int(width * ratio + 0.5)
    shift_y = torch.randint(-reach[0], reach[0] + 1, (n, 1, 1), device=x.device)
    shift_x = torch.randint(-reach[1], reach[1] + 1, (n, 1, 1), device=x.device)
    batch, rows, cols = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(height, device=x.device),
                                       torch.arange(width, device=x.device), indexing="ij")
    rows = (rows + shift_y + 1).clamp(0, height + 1)
    cols = (cols + shift_x + 1).clamp(0, width + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """A square of `ratio` of each side, at a random place in each image, set to zero."""
    n, _, height, width = x.shape
    size = int(height * ratio + 0.5), int(width * ratio + 0.5)
    at_y = torch.randint(0, height + (1 - size[0] % 2), (n, 1, 1), device=x.device)
    at_x = torch.randint(0, width + (1 - size[1] % 2), (n, 1, 1), device=x.device)
    batch, rows, cols = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(size[0], device=x.device),
                                       torch.arange(size[1], device=x.device), indexing="ij")
    rows = (rows + at_y - size[0] // 2).clamp(0, height - 1)
    cols = (cols + at_x - size[1] // 2).clamp(0, width - 1)
    mask = torch.ones(n, height, width, dtype=x.dtype, device=x.device)
    mask[batch, rows, cols] = 0
    return x * mask.unsqueeze(1)


DIFFAUG_POLICIES = {"color": (_brightness, _saturation, _contrast), "translation": (_translation,),
                    "cutout": (_cutout,), "none": ()}


def diffaug_policies(policy: str) -> list[str]:
    """A `+`-joined DiffAugment policy (e.g. "color+translation+cutout"), checked."""
    names = [name.strip() for name in str(policy).split("+")]
    unknown = [name for name in names if name not in DIFFAUG_POLICIES]
    if unknown:
        raise BadInput(f"diffaug {policy!r}: unknown {', '.join(map(repr, unknown))}; join "
                       f"{', '.join(DIFFAUG_POLICIES)} with '+'")
    return names


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """Images augmented by DiffAugment's `policy`, each image with its own random draw, every step
    differentiable: applied to real and generated images alike wherever D sees them, G learns
    through it (an augmentation applied to real images alone would leak into what G makes)."""
    for name in diffaug_policies(policy):
        for transform in DIFFAUG_POLICIES[name]:
            x = transform(x)
    return x


ADVERSARIAL_LOSSES = {
    "loss_g": "generator loss, averaged since the last report",
    "loss_d": "discriminator loss, averaged since the last report",
    "d_real": "discriminator's mean probability of 'real' on real images",
    "d_fake": "discriminator's mean probability of 'real' on generated images",
}


class AdversarialFamily(ModelFamily):
    """What the GAN families share: Adam for a generator and a discriminator (lr_g, lr_d, beta1),
    a non-saturating BCE step (class-conditional where the family says so), DiffAugment of every
    image D sees (hp `diffaug`), and decoding latent draws with the generator. A family overrides
    what differs (a conditional GAN its generation, a Siamese GAN its step)."""

    metric_descriptions = {**ModelFamily.metric_descriptions, **ADVERSARIAL_LOSSES}
    side_multiple: int | None = None  # conv families: image sides this divides (check_data)

    def check_data(self, info):
        super().check_data(info)
        if self.side_multiple:
            check_side(self.name, info["shape"], self.side_multiple)

    def optimizers(self, modules, hp):
        return two_adams(modules, hp, "generator", "discriminator")

    def train_step(self, modules, optimizers, batch, hp):
        return self.adversarial_step(modules, optimizers, batch["x"], hp, batch["y"] if self.conditional else None)[0]

    def adversarial_step(self, modules, optimizers, real, hp, labels=None):
        """One D and one G update (given `labels`, both are conditioned on them); returns the logs,
        and the latent draws and samples G made."""
        G, D = modules["generator"], modules["discriminator"]
        n = len(real)
        z = torch.randn(n, hp["latent_dim"], device=real.device)
        fake = G(z) if labels is None else G(z, labels)
        policy = hp.get("diffaug", "none")

        def judge(images, image_labels):
            images = diff_augment(images, policy)
            return D(images) if labels is None else D(images, image_labels)

        # one discriminator pass over real and fake together: DDP wants one forward per backward
        logits = judge(torch.cat([real, fake.detach()]), None if labels is None else torch.cat([labels, labels]))
        target = torch.cat([torch.ones(n, device=real.device), torch.zeros(n, device=real.device)])
        loss_d = F.binary_cross_entropy_with_logits(logits.float(), target)
        update(optimizers["discriminator"], loss_d)

        loss_g = F.binary_cross_entropy_with_logits(judge(fake, labels).float(), torch.ones(n, device=real.device))
        update(optimizers["generator"], loss_g)
        probs = torch.sigmoid(logits.detach().float())
        logs = {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(),
                "d_real": probs[:n].mean(), "d_fake": probs[n:].mean()}
        return logs, z, fake

    @torch.no_grad()
    def generate(self, modules, n, hp, seed, labels=None):
        return self.decode(modules, seeded_normal((n, hp["latent_dim"]), seed, pixel_device(modules)), hp)

    @torch.no_grad()
    def decode(self, modules, z, hp):
        return torch.cat([modules["generator"](chunk) for chunk in z.split(500)])
