"""Is a feature space fit to score samples in? The FID paper's own test (Heusel et al. 2017, its
Figure 1 and appendix): disturb real images step by step and check that the score rises with every
step, from the floor (another real split) up; and an untrained generator must score far above the
floor and above the mildest disturbance. `bench/metric_validity.py` runs the whole table on every
dataset; the sweep runs `quick_check` (the floor and the four disturbances) before Ray starts.

Disturbances act on float images in [-1, 1] (the generators' range); each level of each one has
its own seeded draws, so a table is the same on every run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from trainables.feature_networks import to_float

# each disturbance's levels, mildest first (intensities in [0, 1] units of the image's range). The
# mildest are visible to the eye: noise of 0.05 or blur of 0.5 px moved FID by less than the floor's
# own spread between real splits at 100 images, in every space (docs/results.md), so a reading
# below the floor there said nothing about the space.
LEVELS = {
    "noise": (0.1, 0.2, 0.3, 0.4),  # Gaussian noise's standard deviation
    "blur": (1.0, 1.5, 2.0, 3.0),  # Gaussian blur's sigma, in pixels
    "rectangles": (1, 2, 3, 4),  # black rectangles, each a quarter of the image's height and width
    "salt_pepper": (0.05, 0.1, 0.15, 0.2),  # the share of pixels set to black or white
}
MODE_SHARES = (0.5, 0.25)  # mode dropping: the share of classes (or feature clusters) kept
CLUSTERS = 8  # k-means clusters of the features, where the images have no classes
FAR_ABOVE_FLOOR = 3.0  # an untrained generator's FID is at least this many times the floor's
# the check's images: at least this many where there are (FID's bias at a few dozen images, in 64
# dimensions, hides mild noise in every space: the space is checked, not the sweep's sample count)
CHECK_IMAGES = 1000


def disturb(images: torch.Tensor, kind: str, level: float, seed: int = 0) -> torch.Tensor:
    """`images` (N, C, H, W) in [-1, 1] disturbed by one level of one of LEVELS' kinds."""
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        out = images + 2 * level * torch.randn(images.shape, generator=g)
    elif kind == "blur":
        # 3 sigma each side, but no wider than the image (reflect padding needs a side above the pad)
        size = min(2 * int(np.ceil(3 * level)) + 1, 2 * min(images.shape[2:]) - 1)
        out = TF.gaussian_blur(images, [size, size], [level, level])
    elif kind == "rectangles":
        out = images.clone()
        n, _, height, width = images.shape
        h, w = max(1, height // 4), max(1, width // 4)
        for _ in range(int(level)):
            tops = torch.randint(0, height - h + 1, (n,), generator=g)
            lefts = torch.randint(0, width - w + 1, (n,), generator=g)
            rows = (torch.arange(height)[None] >= tops[:, None]) & (torch.arange(height)[None] < tops[:, None] + h)
            cols = (torch.arange(width)[None] >= lefts[:, None]) & (torch.arange(width)[None] < lefts[:, None] + w)
            out[(rows[:, :, None] & cols[:, None, :])[:, None].expand_as(out)] = -1.0
    elif kind == "salt_pepper":
        hit = torch.rand(images.shape[0], 1, *images.shape[2:], generator=g) < level
        white = torch.rand(hit.shape, generator=g) < 0.5
        out = torch.where(hit, torch.where(white, 1.0, -1.0), images)
    else:
        raise ValueError(f"unknown disturbance {kind!r}; one of {', '.join(LEVELS)}")
    return out.clamp(-1, 1)


def groups_of(images: torch.Tensor, labels: np.ndarray | None, embed, seed: int = 0) -> np.ndarray:
    """Each image's mode: its class where the data has classes (one label per image), else its
    k-means cluster (CLUSTERS) in the feature space `embed` maps images into."""
    if labels is not None and labels.ndim == 1 and len(np.unique(labels)) >= 4:
        return labels
    from sklearn.cluster import KMeans

    features = torch.cat([embed(chunk) for chunk in images.split(500)]).cpu().numpy()
    return KMeans(CLUSTERS, n_init=4, random_state=seed).fit_predict(features)


def mode_dropped(images: torch.Tensor, groups: np.ndarray, share: float, n: int, seed: int = 0) -> torch.Tensor:
    """`n` images of `images` from only the first `share` of its modes (`groups`), drawn without
    replacement where there are enough."""
    kept = np.unique(groups)[:max(1, int(round(share * len(np.unique(groups)))))]
    pool = np.flatnonzero(np.isin(groups, kept))
    rng = np.random.default_rng(seed)
    return images[torch.from_numpy(rng.choice(pool, n, replace=len(pool) < n))]


@dataclass
class Verdict:
    """A feature space's readings (FID) and whether it passes."""
    floor: float
    sequences: dict[str, list[float]]  # disturbance (or "modes") -> FID at each level, mildest first
    untrained: dict[str, float] = field(default_factory=dict)  # family -> its untrained generator's FID
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def judge(self) -> "Verdict":
        """A sequence must rise strictly from the floor with every level; an untrained generator must
        score FAR_ABOVE_FLOOR times the floor and above every disturbance's mildest level."""
        self.failures = []
        for kind, values in self.sequences.items():
            steps = [self.floor, *values]
            if not all(b > a for a, b in zip(steps, steps[1:])):
                self.failures.append(f"{kind} does not rise with its level: floor {self.floor:.3g}, "
                                     + ", ".join(f"{v:.3g}" for v in values))
        mildest = max((values[0] for values in self.sequences.values()), default=self.floor)
        for family, value in self.untrained.items():
            if not value > max(FAR_ABOVE_FLOOR * self.floor, mildest):
                self.failures.append(f"an untrained {family} scores {value:.3g}: not above {FAR_ABOVE_FLOOR:g}x "
                                     f"the floor ({self.floor:.3g}) and every mildest disturbance ({mildest:.3g})")
        return self

    def as_json(self) -> dict:
        rounded = lambda v: round(float(v), 4)  # noqa: E731
        return {"floor": rounded(self.floor), "sequences": {k: [rounded(v) for v in vs] for k, vs in self.sequences.items()},
                "untrained": {k: rounded(v) for k, v in self.untrained.items()}, "passed": self.passed,
                "failures": self.failures}


def reference_split(images: np.ndarray, n: int) -> torch.Tensor:
    """Another real split, the floor's and every disturbance's images: `n` of `images` (the
    training images, uint8), evenly spaced, as floats in [-1, 1]."""
    return to_float(torch.from_numpy(images[np.linspace(0, len(images) - 1, n).astype(int)]))


def disturbance_readings(quality, reference: torch.Tensor) -> dict[str, list[float]]:
    """FID of `reference` disturbed at every level of LEVELS, each level its own seeded draws."""
    return {kind: [quality(disturb(reference, kind, level, seed=i))["fid"] for i, level in enumerate(levels)]
            for kind, levels in LEVELS.items()}


def quick_check(quality, reference: torch.Tensor) -> Verdict:
    """The sweep's check before Ray starts (a few seconds): `reference` (another real split, as
    many images as `quality` scores against) is the floor; every disturbance must rise from it."""
    return Verdict(quality(reference)["fid"], disturbance_readings(quality, reference)).judge()


def full_check(quality, reference: torch.Tensor, pool: torch.Tensor, labels: np.ndarray | None, embed,
               untrained: dict[str, float] | None = None) -> Verdict:
    """quick_check's disturbances, mode dropping drawn from `pool` (that split's images, classes or
    feature clusters `labels`/`embed`), and the readings of untrained generators (family -> FID), judged."""
    sequences = disturbance_readings(quality, reference)
    groups = groups_of(pool, labels, embed)
    sequences["modes"] = [quality(mode_dropped(pool, groups, share, len(reference), seed=i))["fid"]
                          for i, share in enumerate(MODE_SHARES)]
    return Verdict(quality(reference)["fid"], sequences, dict(untrained or {})).judge()


def fallbacks(kind: str, labeled: bool) -> list[str]:
    """The feature spaces to try in turn: the one asked for alone; for `auto`, the dataset's
    classifier (or, without labels, SimCLR) and then the next best of docs/results.md's table."""
    from trainables.settings import UNLABELED_DEFAULT

    if kind != "auto":
        return [kind]
    return ["classifier", UNLABELED_DEFAULT] if labeled else [UNLABELED_DEFAULT, "rotation"]


def checked_feature_network(kind: str, data, n: int, log=print, check: bool = True, **where) -> tuple[dict, dict]:
    """The sweep's feature network (trainables.features.feature_network; `where`: data_root,
    data_options, subset), checked before Ray starts with `quick_check` on the images trials are
    scored against (`data`'s held-out or val/ images: `n`, the sweep's count, or CHECK_IMAGES
    where there are more) and as many training images as the floor. The check's figures go into
    the network's metadata (`check`, in sweep.json and on the dashboard). A space that fails gives way to the next of `fallbacks`, said in one line; when none
    is left, BadInput names what to do. Inception features and a backbone of the user's file are not
    checked (seconds become minutes on a CPU for networks of their size)."""
    from trainables.errors import BadInput
    from trainables.features import SampleQuality, build_feature_network, feature_network, has_labels
    from trainables.settings import FEATURE_KINDS

    chain, failed = fallbacks(kind, has_labels(data)), []
    training = data.train_x
    if where.get("subset"):  # the floor's split from every training image, as the network is made from them
        from trainables.datasets import load_dataset

        training = load_dataset(data.name, where.get("data_root"), options=where.get("data_options"), strict=False).train_x
    held_out = data.evaluated_on_val().test_x
    n = min(max(n, CHECK_IMAGES), len(held_out), len(training))
    for i, option in enumerate(chain):
        state, meta = feature_network(option, data, log=log, **where)
        if not check or meta.get("kind") == "inception" or meta.get("arch"):
            return state, meta
        start = time.perf_counter()
        quality = SampleQuality(build_feature_network(state, meta), held_out[:n], torch.device("cpu"))
        verdict = quick_check(quality, reference_split(training, n))
        seconds = time.perf_counter() - start
        meta = {**meta, "check": {**verdict.as_json(), "images": n, "seconds": round(seconds, 2), "instead_of": failed}}
        if verdict.passed:
            mildest = ", ".join(f"{k} {vs[0]:.3g}" for k, vs in verdict.sequences.items())
            log(f"feature space {meta['name']} passed its check in {seconds:.1f} s: FID rises from the floor "
                f"{verdict.floor:.3g} (another real split) with every level of each disturbance (mildest: {mildest})")
            return state, meta
        few = f", on only {n} held-out images: FID needs a few hundred" if n < 200 else ""
        why = f"feature space {meta['name']} can't tell disturbed from real images ({verdict.failures[0]}{few})"
        failed.append(meta["name"])
        if i + 1 < len(chain):
            log(f"{why}; falling back to {chain[i + 1]}")
    raise BadInput(f"{why}; choose another with --fid-features ({', '.join(k for k in FEATURE_KINDS if k != kind)}) "
                   f"or sweep anyway with --skip-feature-check")
