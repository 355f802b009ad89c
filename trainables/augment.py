"""Training-time augmentation of the real images, the hyperparameter `augment`: a `+`-joined list of
flip, rotate (up to 15 degrees either way), jitter (brightness and contrast), crop (a random
resized crop back to the image's size) and none, as the source reports augmented their signatures.

It is applied by the shared loop to each training batch on the trial's device with
torchvision.transforms.v2, never to the held-out images. A v2 transform draws one set of
parameters per call, so the batch is transformed in groups of AUGMENT_GROUP images, each group
with its own draw: variety within a batch at a few calls per step, not a Python loop over images.
A sketch and its image (paired data) take the same draw; a rotation fills each one's uncovered
corners with its own background (`fills`, worked out once per trial, so no step waits on the device).

Unlike DiffAugment (blocks.diff_augment, inside D's forward pass, on real and generated images
alike) this changes what the model learns to generate: use transforms the data is invariant to.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from trainables.errors import BadInput

AUGMENT_GROUP = 16  # images that share one random draw
MAX_DEGREES = 15
JITTER = 0.2  # brightness and contrast factors drawn from [1 - JITTER, 1 + JITTER]
CROP_SCALE = (0.7, 1.0)  # the share of the image a random resized crop keeps
AUGMENTS = ("flip", "rotate", "jitter", "crop")


def augment_policies(policy) -> list[str]:
    """A `+`-joined augmentation (e.g. "flip+rotate"), checked; [] for none."""
    names = [name.strip() for name in str(policy).split("+")]
    unknown = [name for name in names if name not in (*AUGMENTS, "none")]
    if unknown:
        raise BadInput(f"augment {policy!r}: unknown {', '.join(map(repr, unknown))}; join "
                       f"{', '.join((*AUGMENTS, 'none'))} with '+'")
    return [name for name in names if name != "none"]


def background(images: np.ndarray, sample: int = 1000) -> float:
    """The mean value in [0, 1] of uint8 (N, C, H, W) images' outermost pixels (black for
    Fashion-MNIST, the paper for signatures): what a rotation fills the corners it uncovers with."""
    images = images[::max(1, len(images) // sample)]
    edges = np.concatenate([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], axis=-1)
    return float(edges.mean()) / 255


def _joint(name: str, height: int, width: int):
    """The v2 transform of `name` (not rotate): one draw applied to every Image it is given."""
    aspect = width / height
    return {"flip": v2.RandomHorizontalFlip(),
            "jitter": v2.ColorJitter(brightness=JITTER, contrast=JITTER),
            "crop": v2.RandomResizedCrop((height, width), scale=CROP_SCALE, ratio=(aspect * 3 / 4, aspect * 4 / 3),
                                         antialias=True)}[name]


def _rotate(parts: list[torch.Tensor], fills: list[float]) -> list[torch.Tensor]:
    """One angle (drawn as v2.RandomRotation draws it) for all `parts`, each filled with its own background."""
    angle = float(torch.empty(1).uniform_(-MAX_DEGREES, MAX_DEGREES))
    return [TF.rotate(part, angle, interpolation=v2.InterpolationMode.BILINEAR, fill=fill)
            for part, fill in zip(parts, fills)]


@torch.no_grad()
def augment_batch(batch: dict, policy: str, paired: bool, fills: dict[str, float] | None = None) -> dict:
    """The training batch with its images ("x", and "a" for two-domain data) augmented by `policy`;
    `paired` "a" and "x" take the same draw. Images are floats in [-1, 1]; `fills` are each key's
    background in [0, 1] (`background`; default black)."""
    names = augment_policies(policy)
    if not names:
        return batch
    out = dict(batch)
    domains = [("x", "a")] if paired and "a" in batch else [(key,) for key in ("x", "a") if key in batch]
    for keys in domains:
        layouts = [torch.channels_last if batch[k].dim() == 4 and batch[k].is_contiguous(memory_format=torch.channels_last)
                   and not batch[k].is_contiguous() else torch.contiguous_format for k in keys]
        images = [(batch[key] + 1) / 2 for key in keys]  # v2's colour transforms work in [0, 1]
        height, width = images[0].shape[2:]
        fill = [(fills or {}).get(key, 0.0) for key in keys]
        joint = {name: _joint(name, height, width) for name in names if name != "rotate"}  # built once a batch
        groups = []
        for parts in zip(*(x.split(AUGMENT_GROUP) for x in images)):
            parts = [tv_tensors.Image(p) for p in parts]
            for name in names:
                if name == "rotate":
                    parts = _rotate(parts, fill)
                else:
                    moved = joint[name](*parts)
                    parts = list(moved) if len(parts) > 1 else [moved]
            groups.append(parts)
        for i, (key, layout) in enumerate(zip(keys, layouts)):
            merged = torch.cat([g[i].as_subclass(torch.Tensor) for g in groups])
            out[key] = (merged * 2 - 1).clamp(-1, 1).contiguous(memory_format=layout)
    return out
