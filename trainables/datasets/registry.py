"""The dataset registry: what a dataset is (ImageData), the loaders registered by name, and
`load_dataset`. The loader modules next to this one register their datasets on import;
`trainables.datasets` imports them all.

Every dataset loads to uint8 arrays of shape (N, C, H, W) plus int64 labels. The sweep loads a
dataset once, puts it in Ray's object store, and every trial reads it from there (zero-copy on
the same node), so images are decoded once per sweep, not once per trial.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from trainables.errors import BadInput
from trainables.storage import cache_root


class DatasetError(BadInput):
    """A dataset that can't be found or read; the message says how to get it."""


@dataclass
class ImageData:
    """Images of one domain (`train_x`), or of two (`train_a` -> `train_x`: sketch -> image,
    domain A -> domain B), with labels: int64 class indices (N,) or multi-hot attributes (N, K)."""
    name: str
    train_x: np.ndarray  # uint8 (N, C, H, W): the images (domain B for two-domain data)
    train_y: np.ndarray  # int64 (N,) class index, or uint8 (N, K) multi-hot attributes
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]  # class names, or attribute names when labels are multi-hot
    source: str  # where the images were read from
    train_a: np.ndarray | None = None  # uint8 (M, C', H, W): domain A (sketches, the source domain)
    test_a: np.ndarray | None = None
    paired: bool = False  # train_a[i] is the source of train_x[i] (same length, same order)
    domains: tuple[str, str] = ("image", "image")  # names of domain A and domain B
    feature_dataset: str | None = None  # dataset whose classifier FID/KID use (default: this one)
    val_x: np.ndarray | None = None  # a folder's val/ split, what a sweep evaluates on (None: test_x)
    val_y: np.ndarray | None = None
    val_a: np.ndarray | None = None
    split: str = "the dataset's own"  # how the held-out images were chosen (sweep.json, checkpoints)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def multilabel(self) -> bool:
        return self.train_y.ndim == 2

    def info(self) -> dict:
        """What a model needs to know to be built (stored in every checkpoint's config.json)."""
        return {"name": self.name, "shape": list(self.shape), "classes": list(self.classes),
                "multilabel": self.multilabel, "paired": self.paired, "domains": list(self.domains),
                "shape_a": list(self.train_a.shape[1:]) if self.train_a is not None else None,
                "source": self.source, "split": self.split,
                "sizes": {"train": len(self.train_x), "val": None if self.val_x is None else len(self.val_x),
                          "test": len(self.test_x)}}

    def evaluated_on_val(self) -> "ImageData":
        """What a sweep's trials see: the val/ split in the held-out place (test_x ...), so a sweep
        chooses its winners on val, while rescore and infer, which load the data again, measure
        on test. Data without a val split is returned as it is."""
        if self.val_x is None:
            return self
        return replace(self, test_x=self.val_x, test_y=self.val_y,
                       test_a=self.test_a if self.val_a is None else self.val_a, val_x=None, val_y=None, val_a=None,
                       split=f"{self.split}; evaluated on val")

    def subset(self, n_train: int | None) -> "ImageData":
        if not n_train or n_train >= len(self.train_x):
            return self
        return replace(self, train_x=self.train_x[:n_train], train_y=self.train_y[:n_train],
                       train_a=None if self.train_a is None else self.train_a[:n_train],
                       source=f"{self.source} (first {n_train} training images)")


Loader = Callable[[Path | None], ImageData]
DATASETS: dict[str, Loader] = {}
DATASET_HELP: dict[str, str] = {}


def register_dataset(name: str, help: str):
    """Register the decorated loader under `name`. A name that is not an identifier or is taken,
    a missing help text or a loader that is not callable fails at import, as torch-fidelity's
    registry does, rather than when a sweep asks for the dataset."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a dataset's name must be an identifier (letters, digits, _), got {name!r}")
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is registered twice")
    if not isinstance(help, str) or not help.strip():
        raise ValueError(f"dataset {name!r} needs a help text (shown by the sweep's --list)")

    def wrap(fn: Loader) -> Loader:
        if not callable(fn):
            raise TypeError(f"dataset {name!r}: the loader must be callable as fn(root, **options), "
                            f"got {type(fn).__name__}")
        DATASETS[name] = fn
        DATASET_HELP[name] = help
        return fn
    return wrap


def dataset_options(name: str) -> list[str]:
    """The options a dataset's loader takes: its keyword arguments after `root`."""
    return list(inspect.signature(DATASETS[name]).parameters)[1:]


def load_dataset(name: str, root: str | Path | None = None, subset: int | None = None,
                 options: dict | None = None, strict: bool = True) -> ImageData:
    """`options`: the loader's keyword options (image_size, fit, classes, ...; None = default).
    One the dataset doesn't take is bad input, or dropped with strict=False (a derived dataset's
    options passed on to the dataset its feature network comes from)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    root = Path(root).expanduser() if root else None
    if root is not None and not root.is_dir():
        raise DatasetError(f"--data-root {root} is not a directory")
    options = {k: v for k, v in (options or {}).items() if v is not None}
    known = dataset_options(name)
    flag = lambda key: "--" + key.replace("_", "-")  # noqa: E731  (the sweep's option of that name)
    if strict and set(options) - set(known):
        raise DatasetError(f"dataset {name} takes no {flag(sorted(set(options) - set(known))[0])} "
                           f"(its options: {', '.join(map(flag, known)) or 'none'})")
    return DATASETS[name](root, **{k: v for k, v in options.items() if k in known}).subset(subset)


def cache_dir() -> Path:
    """Where downloads and trained feature networks are kept (ORCHESTRATOR_CACHE overrides)."""
    return cache_root()
