"""DDPM (Ho et al. 2020) with a small U-Net, after lucidrains' denoising-diffusion-pytorch.

Training: pick a timestep t, noise an image to x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with a
linear or cosine (Nichol & Dhariwal 2021) beta schedule, and regress the U-Net's prediction of eps
on eps (MSE). An EMA copy of the U-Net's weights is what samples and scores.

Sampling walks `sample_steps` of the `timesteps` trained ones, evenly strided, with the DDIM update
(Song et al. 2021): eta = 0 is deterministic DDIM, eta = 1 the (strided) DDPM posterior. So
evaluation and inference can take 20-100 steps instead of 1000.

The U-Net downsamples twice (channels base x (1, 2, 4)), so the image side must be divisible by 4:
28 -> 14 -> 7, 16 -> 8 -> 4 and 32 -> 16 -> 8 need no padding.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from trainables.blocks import EMA, DownBlock, SinusoidalEmbedding, TimeResBlock, UpBlock, check_side, group_norm
from trainables.errors import BadInput
from trainables.family import EvalResult, ModelFamily, pixel_device, register_family, update

CHANNEL_MULTS = (1, 2, 4)  # U-Net widths per resolution in units of base_channels: width is cheap at low resolution
SAMPLE_BATCH = 250  # images per U-Net call while sampling (bounds memory, not results)


class DDPMInputError(BadInput):
    """A noise schedule or number of timesteps ddpm can't use."""


# --- helpers -------------------------------------------------------------------------------------

def extract(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """values[t], shaped (N, 1, 1, 1) to broadcast over images."""
    return values.to(t.device)[t].float().view(-1, 1, 1, 1)


# --- noise schedules -----------------------------------------------------------------------------

def linear_beta_schedule(timesteps: int) -> torch.Tensor:
    """Ho et al.'s betas from 1e-4 to 0.02 over 1000 steps, rescaled so fewer steps end as noisy
    (and clipped at 0.999 like the cosine ones, for very few steps)."""
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clip(max=0.999)


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal: abar(t) = cos^2 of a slightly offset quarter circle; betas clipped at 0.999."""
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    alphas_cumprod = torch.cos((t + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clip(0, 0.999)


SCHEDULES = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule}


@lru_cache(maxsize=16)
def alphas_cumprod(schedule: str, timesteps: int) -> torch.Tensor:
    """abar_t = prod_{s <= t} (1 - beta_s) for t = 0 .. timesteps - 1 (float64, CPU)."""
    if schedule not in SCHEDULES:
        raise DDPMInputError(f"unknown noise schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if timesteps < 2:
        raise DDPMInputError(f"ddpm needs timesteps >= 2, got {timesteps}")
    return torch.cumprod(1 - SCHEDULES[schedule](timesteps), dim=0)


# --- the model -----------------------------------------------------------------------------------

class UNet(nn.Module):
    """eps_theta(x_t, t): a residual U-Net with a sinusoidal time embedding; no attention (small images).
    It remembers the image shape it was built for, which sampling needs."""

    def __init__(self, shape: tuple[int, int, int], base: int, mults: tuple[int, ...] = CHANNEL_MULTS):
        super().__init__()
        self.shape = tuple(shape)
        widths = [base * m for m in mults]
        last, time_dim = len(widths) - 1, 4 * base
        self.time = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, time_dim), nn.SiLU(),
                                  nn.Linear(time_dim, time_dim))
        self.stem = nn.Conv2d(shape[0], base, 3, padding=1)
        self.down = nn.ModuleList(DownBlock(([base] + widths)[i], widths[i], time_dim, downsample=i < last)
                                  for i in range(len(widths)))
        self.mid = nn.ModuleList([TimeResBlock(widths[-1], widths[-1], time_dim),
                                  TimeResBlock(widths[-1], widths[-1], time_dim)])
        # from the lowest resolution up; each level hands the next one up its width
        self.up = nn.ModuleList(UpBlock(widths[i], widths[i], widths[i], time_dim,
                                        upsample_to=widths[i - 1] if i else None)
                                for i in reversed(range(len(widths))))
        self.out = nn.Sequential(group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], shape[0], 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_emb = self.time(t)
        h, skips = self.stem(x), []
        for block in self.down:
            skip, h = block(h, t_emb)
            skips.append(skip)
        for block in self.mid:
            h = block(h, t_emb)
        for block in self.up:
            h = block(h, skips.pop(), t_emb)
        return self.out(h)


# --- the diffusion process -----------------------------------------------------------------------

def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x_t ~ q(x_t | x_0): the image scaled down and noise mixed in, as the schedule says for step t."""
    a = extract(abar, t)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def sampling_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` trained timesteps from the noisiest (T - 1) down to 0, evenly spaced."""
    ts = torch.linspace(timesteps - 1, 0, min(steps, timesteps)).round().long().tolist()
    return sorted(set(ts), reverse=True)


@torch.no_grad()
def ddim_sample(model: nn.Module, shape: tuple[int, ...], abar: torch.Tensor, steps: int, eta: float,
                seed: int, device: torch.device) -> torch.Tensor:
    """Denoise seeded Gaussian noise over strided timesteps (DDIM update; eta = 1 is DDPM-like).
    x_0 predictions are clipped to [-1, 1] and eps re-derived from them, as lucidrains does."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator).to(device)
    ts = sampling_timesteps(len(abar), steps)
    for t, t_prev in zip(ts, [*ts[1:], -1]):
        a, a_prev = abar[t].item(), (abar[t_prev].item() if t_prev >= 0 else 1.0)
        time = torch.full((SAMPLE_BATCH,), float(t), device=device)
        eps = torch.cat([model(chunk, time[:len(chunk)]).float() for chunk in x.split(SAMPLE_BATCH)])
        x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(shape, generator=generator).to(device)
    return x


@register_family
class DDPM(ModelFamily):
    """hp: lr (Adam), schedule ("linear" | "cosine"), timesteps (trained noise levels), base_channels
    (U-Net width), ema_decay, batch_size, grad_clip (max gradient norm), sample_steps (denoising
    steps when sampling; `infer sample --sample-steps N` overrides), eta (0 = DDIM, 1 = DDPM-like),
    eval_sample_steps (the denoising steps of the sweep's own evaluations: fewer than sample_steps,
    as sampling is most of an evaluation's cost; re-scoring and inference use sample_steps; 0: the
    same as sample_steps, for a sweep whose objective is to trade quality against sampling cost),
    eval_sample_share (the share of the evaluation's held-out count that a sweep's evaluation
    generates: FID of 500 samples against the 1000 held-out images at --quick; 1 for re-scoring).
    An untrained U-Net's samples are noise (FID ~385 on Fashion-MNIST whatever its
    hyperparameters), so the sweep doesn't score step 0: evaluations cost ddpm 50 training steps
    each, the other families 3-20."""

    name = "ddpm"
    description = "DDPM: eps-prediction U-Net, linear/cosine noise schedule, EMA weights, strided DDIM sampling"
    default_dataset = "fashion_mnist"
    loss_names = ("loss",)
    metric_descriptions = {**ModelFamily.metric_descriptions, "loss": "training loss, averaged since the last report"}
    defaults = {"lr": 2e-3, "schedule": "cosine", "timesteps": 1000, "base_channels": 16, "ema_decay": 0.999,
                "batch_size": 32, "grad_clip": 1.0, "sample_steps": 20, "eta": 0.0, "eval_sample_steps": 10,
                "eval_sample_share": 0.5}
    mutable = ("lr",)
    # re-scoring samples each seed in sample_steps U-Net passes per image: 10,000 images x 3 seeds x 5
    # checkpoints would take ~35 min of CPU here, far longer than a --quick sweep; --samples overrides
    rescore_samples = 2000
    inference_module = "ema"
    scores_untrained = False

    def check_data(self, info):
        super().check_data(info)
        check_side(self.name, info["shape"], 4)  # the U-Net downsamples twice

    def prepare_data(self, data, hp):
        share = hp["eval_sample_share"]
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise BadInput(f"eval_sample_share must be a number in (0, 1], got {share!r}")
        return super().prepare_data(data, hp)

    def build(self, hp, info):
        self.check_data(info)
        alphas_cumprod(hp["schedule"], int(hp["timesteps"]))  # refuses an unknown schedule before training
        unet = UNet(info["shape"], int(hp["base_channels"]))
        return {"unet": unet, "ema": EMA(unet, hp["ema_decay"])}

    def optimizers(self, modules, hp):
        return {"unet": torch.optim.Adam(modules["unet"].parameters(), lr=hp["lr"])}

    def train_step(self, modules, optimizers, batch, hp):
        x0 = batch["x"]
        abar = alphas_cumprod(hp["schedule"], int(hp["timesteps"]))
        t = torch.randint(0, len(abar), (len(x0),), device=x0.device)
        noise = torch.randn_like(x0)
        loss = F.mse_loss(modules["unet"](q_sample(x0, t, noise, abar), t).float(), noise)
        update(optimizers["unet"], loss, clip=(modules["unet"].parameters(), hp["grad_clip"]))
        modules["ema"].update(modules["unet"])  # unwraps DDP
        return {"loss": loss.detach()}

    def evaluate(self, modules, hp, evaluator, seed):
        """FID/KID of `eval_sample_share` x the held-out count of samples, in `eval_sample_steps`
        denoising steps (both cheaper than re-scoring's full count and sample_steps)."""
        steps = hp["eval_sample_steps"] or hp["sample_steps"]
        share = float(hp["eval_sample_share"])
        # at least KID's subset size (half the held-out images, at most 100)
        n = max(math.ceil(evaluator.n * share), min(100, evaluator.n // 2))
        fake = self.generate(modules, n, {**hp, "sample_steps": steps}, seed)
        return EvalResult(evaluator.quality(fake), fake[:64])

    def rescoring_hp(self, hp):
        return {**hp, "eval_sample_steps": hp["sample_steps"], "eval_sample_share": 1.0}

    def rescore_cost(self, hp):
        """Re-scoring samples every image (not eval_sample_share of them) in sample_steps passes."""
        steps = hp["sample_steps"] / (hp["eval_sample_steps"] or hp["sample_steps"])
        return steps / float(hp["eval_sample_share"])

    @torch.no_grad()
    def generate(self, modules, n, hp, seed, labels=None):
        """`n` samples from the EMA weights in `hp["sample_steps"]` denoising steps."""
        shape = (n, *modules["ema"].module.shape)
        return ddim_sample(modules["ema"], shape, alphas_cumprod(hp["schedule"], int(hp["timesteps"])),
                           int(hp["sample_steps"]), float(hp["eta"]), seed, pixel_device(modules))
