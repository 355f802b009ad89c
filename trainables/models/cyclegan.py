"""CycleGAN (Zhu et al. 2017) for unpaired two-domain translation, as in junyanz/pytorch-CycleGAN-and-pix2pix:
two ResNet generators G: A -> B and F: B -> A, two PatchGAN discriminators, LSGAN loss, a pool of
past fakes for the discriminators, cycle loss lambda_cycle * (|F(G(a)) - a| + |G(F(b)) - b|) and
identity loss lambda_identity * lambda_cycle * (|G(b) - b| + |F(a) - a|) (identity needs both
domains to have the same channels; it is skipped otherwise).

G and F live in one module and so do the two discriminators: under DDP each wrapped module then
runs one forward per backward (the generator module computes the whole cycle in one call).
Works for any size with sides divisible by 4.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.blocks import (ADVERSARIAL_LOSSES, ImagePool, check_domain_sides, diff_augment,
                               grid_rows, init_weights, patch_discriminator, two_adams)
from trainables.family import EvalResult, ModelFamily, register_family, update


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def resnet_generator(in_channels: int, out_channels: int, width: int, n_blocks: int) -> nn.Sequential:
    """Johnson et al.'s network, as CycleGAN's: 7x7 conv, two stride-2 convs, `n_blocks` residual
    blocks at 4 * width channels, two transposed convs back up, 7x7 conv to tanh."""
    return nn.Sequential(
        nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7), nn.InstanceNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, 2, 1), nn.InstanceNorm2d(2 * width), nn.ReLU(),
        nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.InstanceNorm2d(4 * width), nn.ReLU(),
        *[ResidualBlock(4 * width) for _ in range(n_blocks)],
        nn.ConvTranspose2d(4 * width, 2 * width, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(width), nn.ReLU(),
        nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh())


class Generators(nn.Module):
    """G = a2b and F = b2a; `forward` computes everything the generator loss needs."""

    def __init__(self, channels_a: int, channels_b: int, width: int, n_blocks: int):
        super().__init__()
        self.a2b = resnet_generator(channels_a, channels_b, width, n_blocks)
        self.b2a = resnet_generator(channels_b, channels_a, width, n_blocks)

    def forward(self, a: torch.Tensor, b: torch.Tensor, identity: bool) -> dict[str, torch.Tensor]:
        if identity:  # G(b) and F(a) ride along in the same batches as G(a) and F(b)
            fake_b, idt_b = self.a2b(torch.cat([a, b])).split([len(a), len(b)])
            fake_a, idt_a = self.b2a(torch.cat([b, a])).split([len(b), len(a)])
        else:
            fake_b, fake_a, idt_a, idt_b = self.a2b(a), self.b2a(b), None, None
        return {"fake_b": fake_b, "fake_a": fake_a, "rec_a": self.b2a(fake_b), "rec_b": self.a2b(fake_a),
                "idt_a": idt_a, "idt_b": idt_b}


class Discriminators(nn.Module):
    """D_A judges domain A images, D_B domain B. `pools` (past fakes) are plain Python state of
    training, not saved in checkpoints: a resumed trial starts with empty pools."""

    def __init__(self, channels_a: int, channels_b: int, width: int, pool_size: int):
        super().__init__()
        self.a, self.b = patch_discriminator(channels_a, width), patch_discriminator(channels_b, width)
        self.pools = {"a": ImagePool(pool_size, seed=1), "b": ImagePool(pool_size, seed=2)}

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(images_a), self.b(images_b)


def lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    return (scores.float() - target).pow(2).mean()


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.float() - y.float()).abs().mean()


@register_family
class CycleGAN(ModelFamily):
    name = "cyclegan"
    description = "CycleGAN: two ResNet generators, two PatchGAN discriminators, LSGAN + cycle + identity loss"
    default_dataset = "sneaker2boot"
    data_kind = "unpaired"
    directions = ("a2b", "b2a")
    metric_names = ("fid", "fid_a2b", "fid_b2a", "kid", "cycle_l1", "l1", "l1_b2a")
    loss_names = ("loss_g", "loss_d", "loss_cycle", "loss_idt")
    metric_descriptions = {
        **ModelFamily.metric_descriptions, **ADVERSARIAL_LOSSES,
        "fid_a2b": "FID of images translated A -> B against held-out B images",
        "fid_b2a": "FID of images translated B -> A against held-out A images",
        "cycle_l1": "mean absolute pixel error of A -> B -> A against the input",
        "l1": "mean absolute pixel error of the translation against the paired target",
        "l1_b2a": "mean absolute pixel error of the B -> A translation against the paired target",
        "loss_cycle": "cycle-consistency loss (L1 of A -> B -> A and B -> A -> B)",
        "loss_idt": "identity loss (a target-domain image passed through its generator stays itself)",
    }
    defaults = {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "lambda_cycle": 10.0, "lambda_identity": 0.5,
                "width": 16, "n_blocks": 3, "width_d": 32, "pool_size": 50, "batch_size": 16, "diffaug": "none"}
    mutable = ("lr_g", "lr_d")
    inference_modes = ("translate",)

    def check_data(self, info):
        super().check_data(info)
        check_domain_sides(self.name, info, 4)

    def build(self, hp, info):
        channels_a, channels_b = info["shape_a"][0], info["shape"][0]
        return {"generators": init_weights(Generators(channels_a, channels_b, int(hp["width"]), int(hp["n_blocks"]))),
                "discriminators": init_weights(Discriminators(channels_a, channels_b, int(hp["width_d"]),
                                                              int(hp["pool_size"])))}

    def optimizers(self, modules, hp):
        return two_adams(modules, hp, "generators", "discriminators")

    def train_step(self, modules, optimizers, batch, hp):
        G, modules_d = modules["generators"], modules["discriminators"]
        a, b = batch["a"], batch["x"]

        def D(images_a, images_b):  # DiffAugment of every image the discriminators see, real and fake
            policy = hp.get("diffaug", "none")
            return modules_d(diff_augment(images_a, policy), diff_augment(images_b, policy))

        identity_weight = hp["lambda_identity"] * hp["lambda_cycle"] if a.shape[1] == b.shape[1] else 0.0
        out = G(a, b, identity_weight > 0)
        score_a, score_b = D(out["fake_a"], out["fake_b"])
        loss_g = lsgan(score_a, 1.0) + lsgan(score_b, 1.0)
        loss_cycle = l1(out["rec_a"], a) + l1(out["rec_b"], b)
        loss_idt = (l1(out["idt_a"], a) + l1(out["idt_b"], b)) if identity_weight > 0 \
            else torch.zeros((), device=a.device)
        update(optimizers["generators"], loss_g + hp["lambda_cycle"] * loss_cycle + identity_weight * loss_idt)

        # one pass of each discriminator over real images and pooled fakes together
        pools = getattr(modules_d, "module", modules_d).pools  # unwrap DDP
        fake_a, fake_b = pools["a"].query(out["fake_a"]), pools["b"].query(out["fake_b"])
        score_a, score_b = D(torch.cat([a, fake_a]), torch.cat([b, fake_b]))
        loss_d = 0.5 * (lsgan(score_a[:len(a)], 1.0) + lsgan(score_a[len(a):], 0.0)
                        + lsgan(score_b[:len(b)], 1.0) + lsgan(score_b[len(b):], 0.0))
        update(optimizers["discriminators"], loss_d)
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(), "loss_cycle": loss_cycle.detach(),
                "loss_idt": loss_idt.detach()}

    def evaluate(self, modules, hp, evaluator, seed):
        """fid = the mean of fid_a2b (G(A) against held-out B) and fid_b2a (F(B) against held-out A);
        kid likewise; cycle_l1 = mean absolute error of F(G(a)) and G(F(b)) to their inputs; on
        aligned held-out pairs l1 = |G(a) - b| and l1_b2a = |F(b) - a| (pixels in [-1, 1]).
        samples.png: blocks of rows A, G(A), F(G(A)), then B, F(B), G(F(B))."""
        real_a, real_b = evaluator.real("a"), evaluator.real("x")
        fake_b, fake_a = self.translate(modules, real_a, hp, "a2b"), self.translate(modules, real_b, hp, "b2a")
        rec_a, rec_b = self.translate(modules, fake_b, hp, "b2a"), self.translate(modules, fake_a, hp, "a2b")
        to_b, to_a = evaluator.quality(fake_b, "x"), self.quality_or_nan(evaluator, fake_a, "a")
        scores = {"fid_a2b": to_b["fid"], "fid_b2a": to_a["fid"],
                  "cycle_l1": 0.5 * float(l1(rec_a, real_a) + l1(rec_b, real_b))}
        # without a score for domain A (a feature network of other channels), B's alone
        scores["fid"] = to_b["fid"] if math.isnan(to_a["fid"]) else 0.5 * (to_b["fid"] + to_a["fid"])
        scores["kid"] = to_b["kid"] if math.isnan(to_a["kid"]) else 0.5 * (to_b["kid"] + to_a["kid"])
        if evaluator.paired:
            scores["l1"], scores["l1_b2a"] = float(l1(fake_b, real_b)), float(l1(fake_a, real_a))
        images = torch.cat([grid_rows(real_a, fake_b, rec_a, blocks=2), grid_rows(real_b, fake_a, rec_b, blocks=2)])
        return EvalResult(scores, images, nrow=8)

    @staticmethod
    def quality_or_nan(evaluator, fake, domain) -> dict[str, float]:
        try:
            return evaluator.quality(fake, domain)
        except ValueError:  # the feature network takes another number of channels
            return {"fid": math.nan, "kid": math.nan}

    def inference_network(self, modules):
        return modules["generators"].a2b  # one direction translates

    def inference_call(self, modules, hp, evaluator, n):
        images = evaluator.real("a")[:n]
        return (lambda: self.translate(modules, images, hp)), len(images)

    @torch.no_grad()
    def translate(self, modules, images, hp, direction="a2b"):
        net = getattr(modules["generators"], direction)
        return torch.cat([net(chunk) for chunk in images.split(500)]).float()
