"""A small signature-like folder dataset anyone can build offline, for trying `image_folder` with
non-square images and train/val/test folders:

    python -m trainables.datasets.example_folder /tmp/pairs
    python -m orchestrator.sweep dcgan --dataset image_folder --data-root /tmp/pairs --image-size 32x64 \\
        --space search_spaces/signatures.toml

Each image is two Fashion-MNIST items side by side on a 32x64 canvas, dark on white as ink on
paper (the source reports' signatures were 64x128 grey crops of a few hundred images). The
items of train/ come from Fashion-MNIST's training images; val/ and test/ take theirs from two
disjoint halves of its test images, so no item is in two splits. PNG files, grey, written once
(a folder that is not empty is refused). Needs Fashion-MNIST on this machine (Debian's
dataset-fashion-mnist, or a download torchvision makes once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from trainables.errors import BadInput

SPLITS = {"train": 500, "val": 100, "test": 100}  # images per split: the few-hundred-image regime
HEIGHT, WIDTH = 32, 64


def canvases(items: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n uint8 (HEIGHT, WIDTH) images, each two random 28x28 `items` (drawn with replacement)
    side by side, inverted (dark strokes on white) and placed with a random offset of up to 2
    pixels, as a hand never signs twice in one place."""
    out = np.full((n, HEIGHT, WIDTH), 255, np.uint8)
    picks = rng.integers(0, len(items), size=(n, 2))
    offsets = rng.integers(0, 3, size=(n, 2, 2))
    for i in range(n):
        for k in range(2):
            top, left = 1 + offsets[i, k, 0], 2 + 32 * k + offsets[i, k, 1] - 1
            out[i, top:top + 28, left:left + 28] = np.minimum(out[i, top:top + 28, left:left + 28],
                                                              255 - items[picks[i, k]])
    return out


def build(folder: Path, seed: int = 0) -> dict[str, int]:
    """Write the dataset to `folder` (train/ val/ test/ of PNGs); returns the images per split."""
    from PIL import Image

    from trainables.datasets import load_dataset

    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty; choose a new folder")
    fashion = load_dataset("fashion_mnist")
    rng = np.random.default_rng(seed)
    held_out = rng.permutation(len(fashion.test_x))
    half = len(held_out) // 2
    sources = {"train": fashion.train_x, "val": fashion.test_x[np.sort(held_out[:half])],
               "test": fashion.test_x[np.sort(held_out[half:])]}
    for split, n in SPLITS.items():
        items = sources[split][:, 0]
        (folder / split).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(canvases(items, n, rng)):
            Image.fromarray(image, mode="L").save(folder / split / f"{split}_{i:04d}.png")
    return dict(SPLITS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables.datasets.example_folder", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="where to write train/ val/ test/ (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        sizes = build(Path(args.folder), args.seed)
    except (FileExistsError, OSError, BadInput) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(f'{n} {split}' for split, n in sizes.items())} images of {HEIGHT}x{WIDTH} to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
