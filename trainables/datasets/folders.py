"""Folders of images: unpaired (trainA/ trainB/, as CycleGAN's datasets ship), paired (two folders
with matching file names, or pix2pix's side-by-side A|B images) and a plain image folder (e.g.
signatures: any size and mode).

Label-free folders (one image folder, two domains) get a self-supervised FID/KID feature network:
a classifier of the images' rotation (`NAME_rotations`, see rotations.py).

Options (the sweep's --image-size, --fit, --folders, --swap-domains, --heldout-fraction) are the
loaders' keyword arguments; `load_dataset(name, root, options={...})` passes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.datasets.images import (IMAGE_SUFFIXES, common_channels, decode_images, image_files, list_images,
                                        parse_names, pooled_channels)
from trainables.datasets.registry import DatasetError, ImageData, register_dataset
from trainables.datasets.splits import (SPLIT_FOLDERS, folder_split, held_out_parts, holdout_split,
                                        no_fraction_with_folders, seeded_split, split_folders)


def need_root(name: str, root: Path | None, what: str) -> Path:
    if root is None:
        raise DatasetError(f"dataset {name} needs --data-root DIR: {what}")
    return root


def domain_names(root: Path, default: tuple[str, str]) -> tuple[str, str]:
    """horse2zebra -> ('horse', 'zebra'), as CycleGAN's and pix2pix's datasets are named."""
    parts = root.resolve().name.split("2")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else default


def unlabelled(name: str, train_x, test_x, classes: list[str], source: str, **extra) -> ImageData:
    """Data without labels: every image has the last class (a folder's name, or domain B of two
    domains), and FID/KID use the rotation-prediction feature network (`NAME_rotations`)."""
    label = len(classes) - 1
    if extra.get("val_x") is not None:
        extra["val_y"] = np.full(len(extra["val_x"]), label, np.int64)
    return ImageData(name, train_x, np.full(len(train_x), label, np.int64), test_x, np.full(len(test_x), label, np.int64),
                     classes, source, feature_dataset=f"{name}_rotations", **extra)


@register_dataset("unpaired_folders", "two unpaired domains from --data-root DIR with trainA/ trainB/ "
                  "[testA/ testB/] (CycleGAN's layout), resized to --image-size (64)")
def unpaired_folders(root: Path | None, image_size=64, fit: str = "crop", swap_domains: bool = False,
                     heldout_fraction: float | None = None) -> ImageData:
    """Domain A -> B (trainB is the target, `train_x`); without testA/testB a seeded share of each
    (--heldout-fraction) is held out. The domains are named after the folder (horse2zebra) or A and B."""
    root = need_root("unpaired_folders", root, "a folder with trainA/ and trainB/ (and optionally testA/ testB/)")
    if all((root / f"test{d}").is_dir() for d in ("A", "B")):
        no_fraction_with_folders(heldout_fraction, {d: root / f"test{d}" for d in ("A", "B")}, root)
    split = {}
    for d in ("A", "B"):
        if not (root / f"train{d}").is_dir():
            raise DatasetError(f"unpaired_folders: {root} has no train{d}/ (CycleGAN's layout: trainA/ trainB/ "
                               f"[testA/ testB/])")
        files = image_files(root / f"train{d}", "unpaired_folders")
        if (root / f"test{d}").is_dir():
            test = image_files(root / f"test{d}", "unpaired_folders")
            split[d] = (decode_images(files, image_size, fit), decode_images(test, image_size, fit))
        else:
            (images, grey), (train, test) = (decode_images(files, image_size, fit),
                                             holdout_split(len(files), f"train{d}", heldout_fraction))
            split[d] = ((images[train], grey[train]), (images[test], grey[test]))
    how = {d: "test" if (root / f"test{d}").is_dir() else seeded_split(heldout_fraction) for d in ("A", "B")}
    train_a, test_a, train_b, test_b = common_channels(split["A"][0], split["A"][1], split["B"][0], split["B"][1])
    domains = domain_names(root, ("A", "B"))
    if swap_domains:
        train_a, test_a, train_b, test_b, domains = train_b, test_b, train_a, test_a, domains[::-1]
    return unlabelled("unpaired_folders", train_b, test_b, list(domains), f"{root}: {domains[0]} -> {domains[1]}",
                      train_a=train_a, test_a=test_a, paired=False, domains=domains,
                      split="; ".join(f"{d}: {'folder test' + d + '/' if v == 'test' else v}" for d, v in how.items()))


SOURCE_WORDS = ("sketch", "edge", "label", "input", "source", "line", "mask", "seg", "draw")


def matching_folders(root: Path, folders) -> tuple[Path, Path] | None:
    """The two folders of a paired layout: named by `folders` ('sketches,photos'), or the two
    sub-folders of `root` whose file stems match (the one named like a sketch/edge/label is A)."""
    if folders is not None:
        names = parse_names(folders, "--folders")
        if len(names) != 2:
            raise DatasetError(f"--folders takes two folder names (domain A, domain B), got {len(names)}")
        return root / names[0], root / names[1]
    splits = {name for names in SPLIT_FOLDERS.values() for name in names}
    subs = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in splits]
    stems = {p: {f.stem for f in list_images(p)} for p in subs}
    pairs = [(a, b) for i, a in enumerate(subs) for b in subs[i + 1:] if stems[a] and stems[a] == stems[b]]
    if len(pairs) != 1:
        return None
    a, b = pairs[0]
    return (b, a) if any(w in b.name.lower() for w in SOURCE_WORDS) and not any(w in a.name.lower() for w in SOURCE_WORDS) else (a, b)


def _paired_from_folders(root: Path, folder_a: Path, folder_b: Path, image_size, fit: str,
                         heldout_fraction: float | None):
    files_a, files_b = image_files(folder_a, "paired_folders"), image_files(folder_b, "paired_folders")
    by_stem_a, by_stem_b = {f.stem: f for f in files_a}, {f.stem: f for f in files_b}
    for folder, files, by_stem in ((folder_a, files_a, by_stem_a), (folder_b, files_b, by_stem_b)):
        if len(by_stem) != len(files):
            raise DatasetError(f"paired_folders: {folder} has files that differ only in their extension; "
                               f"pairs are matched by name")
    unmatched = sorted(set(by_stem_a) ^ set(by_stem_b))
    if unmatched:
        where = folder_b if unmatched[0] in by_stem_a else folder_a
        raise DatasetError(f"mismatched pairs: {len(unmatched)} file name(s) have no partner, e.g. "
                           f"{unmatched[0]!r} is missing from {where}")
    stems = sorted(by_stem_a)
    a, b = (decode_images([d[s] for s in stems], image_size, fit) for d in (by_stem_a, by_stem_b))
    train, test = holdout_split(len(stems), "paired_folders", heldout_fraction)
    a_x, b_x = common_channels(a, b)
    parts = {"train": (a_x[train], b_x[train]), "test": (a_x[test], b_x[test])}
    return parts, (folder_a.name, folder_b.name), f"{folder_a} -> {folder_b}", seeded_split(heldout_fraction)


def _paired_side_by_side(root: Path, found: dict[str, Path] | None, image_size, fit: str):
    if found is None:
        raise DatasetError(f"paired_folders: side-by-side images need {root / 'train'} and {root / 'test'} or "
                           f"{root / 'val'}")
    decoded = {split: decode_images(image_files(folder, "paired_folders"), image_size, fit, halves=True)
               for split, folder in found.items()}
    # side-by-side images share one mode: both halves of every split take the majority's channels
    halves = pooled_channels(*((images[:, half], grey) for half in (0, 1) for images, grey in decoded.values()))
    n = len(decoded)
    parts = {split: (halves[i], halves[n + i]) for i, split in enumerate(decoded)}
    return parts, domain_names(root, ("A", "B")), f"{root} (A|B side by side)", folder_split(found)


@register_dataset("paired_folders", "paired images from --data-root DIR: two folders with matching file names "
                  "(e.g. sketches/ photos/; --folders A,B names them) or pix2pix's side-by-side A|B images "
                  "in train/ and test/ and/or val/")
def paired_folders(root: Path | None, image_size=64, fit: str = "crop", folders=None,
                   swap_domains: bool = False, heldout_fraction: float | None = None) -> ImageData:
    """train_a[i] (domain A, e.g. the sketch) is the source of train_x[i] (domain B, the photo).
    Two folders: pairs by file stem, a seeded share (--heldout-fraction) held out; side by side:
    the left half is A, in train/, val/ and test/ folders."""
    root = need_root("paired_folders", root, "two folders with matching file names, or train/ and test/ "
                                             "with side-by-side A|B images")
    found = matching_folders(root, folders)
    if found is not None:
        parts, domains, source, split = _paired_from_folders(root, *found, image_size, fit, heldout_fraction)
    elif (root / "train").is_dir():
        splits = split_folders(root)
        if splits:
            no_fraction_with_folders(heldout_fraction, splits, root)
        parts, domains, source, split = _paired_side_by_side(root, splits, image_size, fit)
    else:
        raise DatasetError(f"paired_folders: {root} has neither two sub-folders with matching file names "
                           f"(or name them: --folders A,B) nor train/ with side-by-side A|B images")
    if swap_domains:
        parts, domains = {k: (b, a) for k, (a, b) in parts.items()}, domains[::-1]
    (train_a, train_b), (test_a, test_b), val = held_out_parts(parts)
    return unlabelled("paired_folders", train_b, test_b, list(domains), source, train_a=train_a, test_a=test_a,
                      paired=True, domains=domains, split=split, val_x=None if val is None else val[1],
                      val_a=None if val is None else val[0])


def class_groups(folder: Path, single: str) -> dict[str, list[Path]]:
    """A folder's image files by class: images directly in it are one class named `single`; else
    each sub-folder with images is a class (torchvision's ImageFolder layout)."""
    top = list_images(folder)
    if top:
        return {single: top}
    subs = [p for p in sorted(folder.iterdir()) if p.is_dir()]
    groups = {p.name: files for p in subs if (files := list_images(p))}
    if not groups:
        raise DatasetError(f"image_folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder} "
                           f"or its sub-folders")
    return groups


@register_dataset("image_folder", "any folder of images (--data-root DIR, e.g. signatures): any size and mode, "
                  "grey or RGB as most are, --fit crop|pad|stretch to --image-size (64, or HxW); sub-folders = "
                  "classes; train/ val/ test/ sub-folders = the splits")
def image_folder(root: Path | None, image_size=64, fit: str = "crop", heldout_fraction: float | None = None) -> ImageData:
    """Images directly in the folder form one class; otherwise each sub-folder with images is a
    class (torchvision's ImageFolder layout). With train/, val/ (or valid/) and test/ sub-folders,
    each laid out so, those are the splits; otherwise a seeded share (--heldout-fraction) is held out."""
    root = need_root("image_folder", root, "a folder of images, or of class sub-folders of images")
    name = root.resolve().name
    found = split_folders(root)
    if found is None:
        groups = {"all": class_groups(root, name)}
    else:
        no_fraction_with_folders(heldout_fraction, found, root)
        groups = {split: class_groups(folder, name) for split, folder in found.items()}
    classes = list(groups.get("train", groups.get("all")))
    for split, group in groups.items():
        unknown = sorted(set(group) - set(classes))
        if unknown:
            raise DatasetError(f"image_folder: {found[split]} has class {unknown[0]!r}, which train/ lacks")
    files = {split: [f for files in group.values() for f in files] for split, group in groups.items()}
    labels = {split: np.concatenate([np.full(len(files), classes.index(c), np.int64) for c, files in group.items()])
              for split, group in groups.items()}
    images = dict(zip(files, pooled_channels(*(decode_images(f, image_size, fit) for f in files.values()))))
    if found is None:
        train, test = holdout_split(len(files["all"]), "image_folder", heldout_fraction)
        parts = {"train": (images["all"][train], labels["all"][train]), "test": (images["all"][test], labels["all"][test])}
        split = seeded_split(heldout_fraction)
    else:
        parts, split = {s: (images[s], labels[s]) for s in images}, folder_split(found)
    (train_x, train_y), (test_x, test_y), val = held_out_parts(parts)
    val_x = None if val is None else val[0]
    if len(classes) == 1:
        return unlabelled("image_folder", train_x, test_x, classes, str(root), split=split, val_x=val_x)
    return ImageData("image_folder", train_x, train_y, test_x, test_y, classes, str(root), split=split,
                     val_x=val_x, val_y=None if val is None else val[1])
