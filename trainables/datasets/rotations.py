"""The rotation sets: the FID/KID feature network of a dataset without labels (an image folder,
two domains) is a classifier of its images' rotation, trained on `rotated`'s data: the images
turned by 0/90/180/270 degrees (non-square ones by a half turn and two mirror images), labelled
by domain and rotation. `NAME_rotations` registers that data for image_folder, unpaired_folders
and paired_folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.datasets.folders import image_folder, paired_folders, unpaired_folders
from trainables.datasets.registry import ImageData, register_dataset

ROTATION_CAP = 5000  # images per domain the rotation classifier learns from
HALF_TURNS = ("", "rotated 180", "mirrored left to right", "mirrored top to bottom")  # turns that keep H x W


def turn(images: np.ndarray, r: int) -> np.ndarray:
    """Turn r of uint8 (N, C, H, W) images: square ones by r quarter turns; non-square ones, whose
    shape a quarter turn would change, by HALF_TURNS[r] (a half turn and the two mirror images)."""
    if images.shape[2] == images.shape[3]:
        return np.rot90(images, r, axes=(2, 3))
    return [images, images[:, :, ::-1, ::-1], images[:, :, :, ::-1], images[:, :, ::-1, :]][r]


def rotated(data: ImageData, name: str) -> ImageData:
    """The feature network's data for a dataset without labels: its images (both domains of
    two-domain data) turned by 0, 90, 180 and 270 degrees, labelled by domain and rotation.
    Predicting the rotation is a classic self-supervised task (Gidaris et al. 2018, RotNet): to
    solve it the classifier must learn shapes, strokes and layout, so FID/KID in its feature
    space measure those, where a one-class classifier learns nothing. Upright images of domain d
    are class d, the same index as the data's own labels."""
    domains = [(data.train_a, data.test_a)] if data.train_a is not None else []
    domains.append((data.train_x, data.test_x))
    # one name a domain: the folder's (its one class), or the dataset's where its labels are classes
    names = list(data.domains) if data.train_a is not None else list(data.classes) if len(data.classes) == 1 else [data.name]

    def turned(split: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for d, images in enumerate(pair[split] for pair in domains):
            images = images[::max(1, len(images) // ROTATION_CAP)][:ROTATION_CAP]
            for r in range(4):
                xs.append(turn(images, r))
                ys.append(np.full(len(images), d + len(domains) * r, np.int64))
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    square = data.shape[1] == data.shape[2]
    turns = [f"rotated {90 * r}" for r in range(4)] if square else list(HALF_TURNS)
    classes = [n if r == 0 else f"{n} {turns[r]}" for r in range(4) for n in names]
    how = "turned by 0/90/180/270 degrees" if square else "turned by 0/180 degrees and mirrored"
    return ImageData(name, *turned(0), *turned(1), classes, f"{data.source}, {how}")


# the feature networks' data of the datasets without labels (see `rotated`)

@register_dataset("image_folder_rotations", "image_folder's images turned by 0/90/180/270 degrees: the data of "
                  "its FID/KID feature network (rotation prediction)")
def image_folder_rotations(root: Path | None, image_size=64, fit: str = "crop", heldout_fraction: float | None = None) -> ImageData:
    return rotated(image_folder(root, image_size, fit, heldout_fraction), "image_folder_rotations")


@register_dataset("unpaired_folders_rotations", "both domains of unpaired_folders turned by 0/90/180/270 degrees: "
                  "the data of its FID/KID feature network")
def unpaired_folders_rotations(root: Path | None, image_size=64, fit: str = "crop",
                               swap_domains: bool = False, heldout_fraction: float | None = None) -> ImageData:
    return rotated(unpaired_folders(root, image_size, fit, swap_domains, heldout_fraction), "unpaired_folders_rotations")


@register_dataset("paired_folders_rotations", "both domains of paired_folders turned by 0/90/180/270 degrees: "
                  "the data of its FID/KID feature network")
def paired_folders_rotations(root: Path | None, image_size=64, fit: str = "crop", folders=None,
                             swap_domains: bool = False, heldout_fraction: float | None = None) -> ImageData:
    return rotated(paired_folders(root, image_size, fit, folders, swap_domains, heldout_fraction),
                   "paired_folders_rotations")
