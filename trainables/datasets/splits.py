"""Which images a folder dataset holds out for evaluation: its train/, val/ (or valid/,
validation/) and test/ sub-folders where it has them, else a seeded share (--heldout-fraction,
HOLDOUT where it isn't given) that every reload of the data holds out again; and how the split
was made, in words (ImageData.split, in sweep.json and checkpoints).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.datasets.registry import DatasetError

HOLDOUT = 0.1  # share of images held out when a layout has no test folder (--heldout-fraction)
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def check_fraction(fraction) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise DatasetError(f"--heldout-fraction must be a number between 0 and 1, got {fraction!r}")
    return float(fraction)


def heldout_share(fraction: float | None) -> float:
    """--heldout-fraction, checked; HOLDOUT where it wasn't given."""
    return HOLDOUT if fraction is None else check_fraction(fraction)


def holdout_split(n: int, what: str, fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic share held out (seed 0's permutation of the sorted files: every reload of
    the data, by --resume, rescore or infer, holds out the same images), both parts sorted;
    `fraction` None: HOLDOUT."""
    fraction = heldout_share(fraction)
    if n < 2:
        raise DatasetError(f"{what}: {n} image(s); need at least 2 to hold some out for evaluation")
    test = np.sort(np.random.default_rng(0).permutation(n)[:min(n - 1, max(1, round(n * fraction)))])
    return np.setdiff1d(np.arange(n), test), test


def seeded_split(fraction: float | None) -> str:
    """How a layout without test folders was split (ImageData.split, in sweep.json and checkpoints)."""
    return f"seeded: {100 * heldout_share(fraction):g}% held out (seed 0)"


def no_fraction_with_folders(heldout_fraction, found: dict[str, Path], root: Path) -> None:
    if heldout_fraction is not None:
        raise DatasetError(f"{root} has split folders ({', '.join(f.name + '/' for f in found.values())}); "
                           f"--heldout-fraction applies only to folders without them")


def split_folders(root: Path) -> dict[str, Path] | None:
    """A folder's train/, val/ (or valid/, validation/) and test/ sub-folders: train and at least one
    of the other two, else None."""
    found = {split: next((root / n for n in names if (root / n).is_dir()), None) for split, names in SPLIT_FOLDERS.items()}
    if found["train"] is None or (found["val"] is None and found["test"] is None):
        return None
    return {split: folder for split, folder in found.items() if folder is not None}


def folder_split(found: dict[str, Path]) -> str:
    return "folders: " + ", ".join(f"{split} = {folder.name}/" for split, folder in found.items())


def held_out_parts(parts: dict) -> tuple:
    """A layout's splits -> (train, test, val): test is test/ (else val/), val is val/ only where
    test/ exists too (a sweep then evaluates on val, rescore and infer on test)."""
    test = parts.get("test", parts.get("val"))
    return parts["train"], test, parts.get("val") if "test" in parts else None
