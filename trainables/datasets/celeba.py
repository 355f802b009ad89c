"""CelebA (img_align_celeba/*.jpg + list_attr_celeba.txt): `celeba`, faces labelled by their 40
attributes (multi-hot), and `celeba_split`, two unpaired domains: the faces without and with one
attribute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.datasets.images import decode_images, list_images, parse_names
from trainables.datasets.registry import DatasetError, ImageData, cache_dir, register_dataset
from trainables.datasets.splits import holdout_split


def find_celeba(root: Path | None) -> Path:
    candidates = [root, root / "celeba"] if root is not None else [cache_dir() / "data" / "celeba"]
    for folder in candidates:
        if (folder / "list_attr_celeba.txt").is_file() and (folder / "img_align_celeba").is_dir():
            return folder
    raise DatasetError(f"no CelebA (img_align_celeba/ and list_attr_celeba.txt) in "
                       f"{' or '.join(map(str, candidates))}; download it from its site and pass --data-root DIR")


def read_celeba_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """list_attr_celeba.txt: a count, the attribute names, then 'NAME.jpg  1 -1 ...' per image.
    Returns (file names, attribute names, uint8 (N, K) multi-hot)."""
    try:
        lines = path.read_text().splitlines()
        count, attributes = int(lines[0].split()[0]), lines[1].split()
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not CelebA's attribute list ({type(e).__name__})") from None
    names, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(attributes) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise DatasetError(f"{path} line {number}: expected a file name and {len(attributes)} values of 1 or -1")
        names.append(fields[0])
        rows.append([v == "1" for v in fields[1:]])
    if len(names) != count:
        raise DatasetError(f"{path} says {count} images but lists {len(names)}")
    return names, attributes, np.array(rows, dtype=np.uint8).reshape(len(names), len(attributes))


def read_celeba(root: Path | None, image_size, fit: str):
    """(train_x, train_y, test_x, test_y, attribute names, folder). The split is
    list_eval_partition.txt's (0 = train; 1 valid + 2 test are held out) when present, else a
    deterministic ~10% is held out."""
    folder = find_celeba(root)
    names, attributes, labels = read_celeba_attributes(folder / "list_attr_celeba.txt")
    present = {f.name for f in list_images(folder / "img_align_celeba")}
    missing = [n for n in names if n not in present]
    if missing:
        raise DatasetError(f"list_attr_celeba.txt names {len(names)} images but {len(missing)} are missing from "
                           f"{folder / 'img_align_celeba'} (first: {missing[0]})")
    files = [folder / "img_align_celeba" / n for n in names]
    partition = folder / "list_eval_partition.txt"
    if partition.is_file():
        split = dict(line.split()[:2] for line in partition.read_text().splitlines() if len(line.split()) >= 2)
        test = np.array([split.get(n, "0") != "0" for n in names])
        train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
        if not len(train_idx) or not len(test_idx):
            raise DatasetError(f"{partition} leaves no training or no held-out images")
    else:
        train_idx, test_idx = holdout_split(len(files), "CelebA")
    images = decode_images(files, image_size, fit)[0]
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], attributes, folder


def attribute_index(attributes: list[str], name: str) -> int:
    if name not in attributes:
        raise DatasetError(f"unknown CelebA attribute {name!r}; known: {', '.join(attributes)}")
    return attributes.index(name)


@register_dataset("celeba", "CelebA faces (--data-root), center-cropped to --image-size (64), labels = the "
                  "40 attributes (multi-hot); --classes keeps some attributes")
def celeba(root: Path | None, image_size=64, fit: str = "crop", classes=None) -> ImageData:
    train_x, train_y, test_x, test_y, attributes, folder = read_celeba(root, image_size, fit)
    if classes is not None:
        keep = [attribute_index(attributes, a) for a in parse_names(classes, "--classes")]
        train_y, test_y, attributes = train_y[:, keep], test_y[:, keep], [attributes[i] for i in keep]
    return ImageData("celeba", train_x, train_y, test_x, test_y, attributes, str(folder))


@register_dataset("celeba_split", "CelebA as two unpaired domains: A = without --attribute (Eyeglasses), "
                  "B = with it; FID/KID use celeba's attribute classifier")
def celeba_split(root: Path | None, image_size=64, fit: str = "crop", attribute: str = "Eyeglasses") -> ImageData:
    """Domain B's labels are its 40 attributes. FID/KID of both domains use the `celeba` feature
    network: a 40-attribute classifier trained on all faces (with and without the attribute) at
    this image size, so both directions of a translation are measured in one space that knows
    the attribute; a classifier of this dataset alone would only see domain B."""
    train_x, train_y, test_x, test_y, attributes, folder = read_celeba(root, image_size, fit)
    k = attribute_index(attributes, attribute)
    has_train, has_test = train_y[:, k] == 1, test_y[:, k] == 1
    for part, mask in (("training", has_train), ("held-out", has_test)):
        if mask.all() or not mask.any():
            raise DatasetError(f"CelebA's {part} images are all {'with' if mask.all() else 'without'} {attribute}; "
                               f"need both to split by it")
    return ImageData("celeba_split", train_x[has_train], train_y[has_train], test_x[has_test], test_y[has_test],
                     attributes, f"{folder}: no {attribute} -> {attribute}", train_a=train_x[~has_train],
                     test_a=test_x[~has_test],
                     paired=False, domains=(f"no_{attribute}", attribute), feature_dataset="celeba")
