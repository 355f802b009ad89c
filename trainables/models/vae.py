"""Variational autoencoder (Kingma & Welling 2014): an MLP (784-512-256-z, as the paper's
Fashion/MNIST models) or a small conv encoder/decoder, trained on reconstruction + beta * KL.

The decoder outputs logits of pixel means in [0, 1] (images map from [-1, 1] by (x + 1) / 2):
  recon = "bce": Bernoulli likelihood, binary cross-entropy with logits, summed over pixels (nats);
  recon = "mse": Gaussian likelihood of fixed variance 1/2 on sigmoid(logits), i.e. the summed
                 squared error (its constant dropped).
Held-out ELBO, reconstruction and KL are per image, in nats. The conv variant takes any image
size: it pads height and width up to a multiple of 4 and crops the decoder's output back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import BadInput
from trainables.family import EvalResult, ModelFamily, pixel_device, register_family, seeded_normal, update


class VAENet(nn.Module):
    """Encoder to a diagonal Gaussian posterior, decoder to pixel logits; subclasses fill in the layers."""

    encoder: nn.Module
    decoder: nn.Module

    def __init__(self, shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        self.shape, self.latent_dim = tuple(shape), latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] -> posterior mean and log-variance."""
        return self.encoder(x).float().chunk(2, dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent vectors -> pixel logits of shape (N, C, H, W)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """One pass for training (DDP wants a single forward): logits of a posterior sample, mu, logvar."""
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if eps is None else eps
        return self.decode(mu + eps * (0.5 * logvar).exp()), mu, logvar


class MLPVAE(VAENet):
    def __init__(self, shape, latent_dim: int, hidden: int = 512):
        super().__init__(shape, latent_dim)
        pixels = math.prod(shape)
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
            nn.Linear(hidden // 2, 2 * latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, hidden), nn.ReLU(),
            nn.Linear(hidden, pixels), nn.Unflatten(1, tuple(shape)))


class ConvVAE(VAENet):
    def __init__(self, shape, latent_dim: int, width: int = 32):
        super().__init__(shape, latent_dim)
        channels, height, wide = shape
        self.padded = (-(-height // 4) * 4, -(-wide // 4) * 4)
        inner = (2 * width, self.padded[0] // 4, self.padded[1] // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(math.prod(inner), 2 * latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, math.prod(inner)), nn.ReLU(), nn.Unflatten(1, inner),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1))

    def encode(self, x):
        pad_h, pad_w = self.padded[0] - x.shape[2], self.padded[1] - x.shape[3]
        return super().encode(F.pad(x, (0, pad_w, 0, pad_h), value=-1.0) if pad_h or pad_w else x)

    def decode(self, z):
        return self.decoder(z)[:, :, :self.shape[1], :self.shape[2]]


ARCHS = {  # arch -> network builder from (image shape, hp)
    "mlp": lambda shape, hp: MLPVAE(shape, int(hp["latent_dim"]), int(hp["hidden"])),
    "conv": lambda shape, hp: ConvVAE(shape, int(hp["latent_dim"]), int(hp["width"])),
}


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


def _mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(logits) - target).pow(2).flatten(1).sum(1)


RECON = {"bce": _bce, "mse": _mse}  # per-image negative log-likelihood, targets in [0, 1]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def check_choice(hp: dict, key: str, registry: dict) -> None:
    if hp[key] not in registry:
        raise BadInput(f"{key} must be one of {', '.join(registry)}, got {hp[key]!r}")


def build_vae(hp: dict, info: dict) -> VAENet:
    check_choice(hp, "arch", ARCHS)
    check_choice(hp, "recon", RECON)
    return ARCHS[hp["arch"]](tuple(info["shape"]), hp)


def terms(vae: nn.Module, x: torch.Tensor, hp: dict, eps: torch.Tensor | None = None):
    """Per-image reconstruction NLL and KL of images `x` in [-1, 1]. `eps` = None: a random
    posterior sample (training); a tensor: that sample; zeros: the posterior mean (deterministic)."""
    logits, mu, logvar = vae(x, eps)
    return RECON[hp["recon"]](logits.float(), (x.float() + 1) / 2), kl_divergence(mu, logvar)


@torch.no_grad()
def heldout_terms(vae: VAENet, x: torch.Tensor, hp: dict, seed: int | None = None, chunk: int = 500):
    """`terms` over many images in chunks; `seed` draws reproducible posterior samples, None uses the mean."""
    recon, kl = [], []
    for i, part in enumerate(x.split(chunk)):
        shape = (len(part), vae.latent_dim)
        eps = torch.zeros(shape, device=part.device) if seed is None else seeded_normal(shape, seed + i, part.device)
        r, k = terms(vae, part, hp, eps)
        recon.append(r)
        kl.append(k)
    return torch.cat(recon), torch.cat(kl)


@register_family
class VAE(ModelFamily):
    name = "vae"
    description = "VAE: MLP or conv encoder/decoder, BCE or MSE reconstruction + beta * KL"
    default_dataset = "fashion_mnist"
    metric_names = ("fid", "kid", "kid_std", "elbo", "recon_heldout", "kl_heldout")
    loss_names = ("loss", "recon", "kl")
    metric_descriptions = {
        **ModelFamily.metric_descriptions,
        "elbo": "held-out evidence lower bound per image, nats (higher is better)",
        "recon_heldout": "held-out reconstruction loss per image, nats",
        "kl_heldout": "held-out KL(q(z|x) || p(z)) per image, nats",
        "loss": "training loss, averaged since the last report",
        "recon": "reconstruction term of the training loss",
        "kl": "KL term of the training loss",
    }
    defaults = {"lr": 1e-3, "latent_dim": 16, "beta": 1.0, "arch": "mlp", "recon": "bce", "batch_size": 64,
                "hidden": 512, "width": 32}
    mutable = ("lr",)
    inference_modes = ("sample", "reconstruct", "interpolate")

    def build(self, hp, info):
        return {"vae": build_vae(hp, info)}

    def optimizers(self, modules, hp):
        return {"vae": torch.optim.Adam(modules["vae"].parameters(), lr=hp["lr"])}

    def train_step(self, modules, optimizers, batch, hp):
        recon, kl = terms(modules["vae"], batch["x"], hp)
        recon, kl = recon.mean(), kl.mean()
        loss = recon + hp["beta"] * kl
        update(optimizers["vae"], loss)
        return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}

    def heldout_scores(self, modules, hp, images, seed) -> dict[str, float]:
        """Single-sample ELBO estimate, reconstruction NLL and KL per held-out image (nats)."""
        recon, kl = heldout_terms(modules["vae"], images, hp, seed)
        return {"elbo": -float((recon + kl).mean()), "recon_heldout": float(recon.mean()),
                "kl_heldout": float(kl.mean())}

    def evaluate(self, modules, hp, evaluator, seed):
        """FID/KID of decoded prior samples, held-out ELBO; samples.png: 6 rows of samples, then a
        row of held-out images and a row of their reconstructions."""
        fake = self.generate(modules, evaluator.n, hp, seed)
        real = evaluator.real()
        scores = {**evaluator.quality(fake), **self.heldout_scores(modules, hp, real, seed)}
        images = torch.cat([fake[:48], real[:8], self.decode(modules, self.encode(modules, real[:8], hp), hp)])
        return EvalResult(scores, images, nrow=8)

    def inference_network(self, modules):
        return modules["vae"].decoder  # sampling decodes prior draws

    @torch.no_grad()
    def generate(self, modules, n, hp, seed, labels=None):
        return self.decode(modules, seeded_normal((n, hp["latent_dim"]), seed, pixel_device(modules)), hp)

    @torch.no_grad()
    def encode(self, modules, images, hp):
        """The posterior mean."""
        return torch.cat([modules["vae"].encode(chunk)[0] for chunk in images.split(500)])

    @torch.no_grad()
    def decode(self, modules, z, hp):
        """The decoder's mean image, in [-1, 1]."""
        return torch.cat([torch.sigmoid(modules["vae"].decode(chunk).float()) * 2 - 1 for chunk in z.split(500)])
