"""The contract every model family fills in, and the registry the rest of the project reads.

As in pytorch-CycleGAN-and-pix2pix's BaseModel: a family says how to build its modules and
optimizers, what one training step does, and how to generate images; the shared worker loop,
the sweep, `best`, `infer` and the dashboard work only from this contract. Adding a model is one
file that subclasses ModelFamily plus one search space in `search_spaces/`.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.errors import BadInput

FAMILIES: dict[str, "ModelFamily"] = {}


def register_family(cls: type["ModelFamily"]) -> type["ModelFamily"]:
    FAMILIES[cls.name] = cls()
    return cls


class UnknownFamily(BadInput):
    pass


def get_family(name: str) -> "ModelFamily":
    import trainables.models  # noqa: F401  (registers every family)

    if name not in FAMILIES:
        raise UnknownFamily(f"unknown model {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def all_families() -> dict[str, "ModelFamily"]:
    import trainables.models  # noqa: F401

    return dict(sorted(FAMILIES.items()))


class ModelFamily:
    name: str = ""
    description: str = ""
    default_dataset: str = "fashion_mnist"
    objective: str = "fid"  # the metric a checkpoint is ranked by
    mode: str = "min"
    metric_names: tuple[str, ...] = ("fid", "kid", "kid_std")  # what `evaluate` returns
    loss_names: tuple[str, ...] = ()
    defaults: dict = {}  # hyperparameters that exist but are not searched by default
    inference_modes: tuple[str, ...] = ("sample",)

    def build(self, hp: dict, shape: tuple[int, int, int]) -> dict[str, nn.Module]:
        """The family's modules, by name (e.g. generator, discriminator)."""
        raise NotImplementedError

    def optimizers(self, modules: dict[str, nn.Module], hp: dict) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, modules: dict[str, nn.Module], optimizers: dict, real: torch.Tensor,
                   labels: torch.Tensor, hp: dict) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch of real images in [-1, 1]; returns detached losses."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, modules: dict[str, nn.Module], n: int, hp: dict, seed: int) -> torch.Tensor:
        """`n` images in [-1, 1], reproducible for a given seed."""
        raise NotImplementedError

    def evaluate(self, modules: dict[str, nn.Module], hp: dict, quality, seed: int) -> tuple[dict, torch.Tensor]:
        """Sample-quality scores and the images to show. Default: FID/KID of generated samples."""
        fake = self.generate(modules, quality.n, hp, seed)
        return quality(fake), fake
