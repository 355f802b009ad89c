"""The datasets that need no --data-root: MNIST and Fashion-MNIST (idx files from system folders,
the cache or torchvision's download), scikit-learn's digits, and tasks derived from them (edge
sketches paired with their images, two classes as two unpaired domains).
"""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np

from trainables.datasets.registry import DATASETS, DatasetError, ImageData, Loader, cache_dir, register_dataset


# --- MNIST-format datasets (idx files) -------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, IndexError, EOFError) as e:
        raise DatasetError(f"{path} is not a readable idx file ({e})") from None


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four idx files in `folder` (or torchvision's `raw/` below it), gzipped or not."""
    for base in (folder, folder / "raw"):
        found = {}
        for key, stem in IDX_FILES.items():
            for candidate in (base / stem, base / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def load_idx_dataset(name: str, files: dict[str, Path], classes: list[str]) -> ImageData:
    arrays = {key: read_idx(path) for key, path in files.items()}
    for key in ("train_x", "test_x"):
        if arrays[key].ndim != 3:
            raise DatasetError(f"{files[key]} holds shape {arrays[key].shape}, expected (N, H, W) images")
    if len(arrays["train_x"]) != len(arrays["train_y"]) or len(arrays["test_x"]) != len(arrays["test_y"]):
        raise DatasetError(f"{name}: image and label files in {files['train_x'].parent} differ in length")
    return ImageData(
        name=name,
        train_x=arrays["train_x"][:, None].copy(),
        train_y=arrays["train_y"].astype(np.int64),
        test_x=arrays["test_x"][:, None].copy(),
        test_y=arrays["test_y"].astype(np.int64),
        classes=classes,
        source=str(files["train_x"].parent),
    )


def idx_dataset(name: str, torchvision_cls: str, system_dirs: list[str], classes: list[str],
                how_to_get: str) -> Loader:
    """A loader for an MNIST-format dataset: --data-root, then system folders, then torchvision."""

    def load(root: Path | None) -> ImageData:
        if root is not None:
            for folder in (root, root / torchvision_cls):
                files = find_idx_files(folder)
                if files:
                    return load_idx_dataset(name, files, classes)
            raise DatasetError(f"no {name} idx files (train-images-idx3-ubyte[.gz] ...) in {root}")
        for folder in system_dirs + [str(cache_dir() / "data" / torchvision_cls)]:
            files = find_idx_files(Path(folder))
            if files:
                return load_idx_dataset(name, files, classes)
        return download(name, torchvision_cls, classes, how_to_get)

    return load


def download(name: str, torchvision_cls: str, classes: list[str], how_to_get: str) -> ImageData:
    """torchvision's own download, for users who are online."""
    import torchvision.datasets

    root = cache_dir() / "data"
    try:
        for train in (True, False):
            getattr(torchvision.datasets, torchvision_cls)(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types
        raise DatasetError(f"{name} is not on this machine and could not be downloaded "
                           f"({type(e).__name__}); {how_to_get}") from None
    return load_idx_dataset(name, find_idx_files(root / torchvision_cls), classes)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]

register_dataset("fashion_mnist", "Fashion-MNIST, 28x28 grey, 60k+10k, 10 classes")(idx_dataset(
    "fashion_mnist", "FashionMNIST", ["/usr/share/datasets/fashion-mnist"], FASHION_CLASSES,
    "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
    "or pass --data-root DIR holding train-images-idx3-ubyte.gz and the other three idx files"))

register_dataset("mnist", "MNIST digits, 28x28 grey, 60k+10k (torchvision download or --data-root)")(idx_dataset(
    "mnist", "MNIST", [], [str(i) for i in range(10)],
    "pass --data-root DIR holding MNIST's four idx files, or run once with internet access"))


@register_dataset("digits", "scikit-learn's 8x8 digits upscaled to 16x16, 1437+360; always available, tiny")
def load_digits(root: Path | None) -> ImageData:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    x = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    y = bunch.target.astype(np.int64)
    split = 1437  # scikit-learn's data is ordered by writer: the last 360 images are held out
    return ImageData("digits", x[:split], y[:split], x[split:], y[split:],
                     [str(i) for i in range(10)], "sklearn.datasets.load_digits")


# --- derived tasks: sketches made from images, and class splits as two domains ------------------

def edge_sketches(images: np.ndarray, threshold: float = 0.2, chunk: int = 4096) -> np.ndarray:
    """Edge maps of uint8 images as black strokes on white, as edges2shoes was made from photos:
    Sobel gradient magnitude of the lightly blurred image, thresholded relative to each image's max."""
    import torch
    import torch.nn.functional as F

    blur = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16
    sobel_x = torch.tensor([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]])
    kernels = torch.stack([sobel_x, sobel_x.T])[:, None]
    out = np.empty((len(images), 1, *images.shape[2:]), dtype=np.uint8)
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(images[i:i + chunk]).float().mean(1, keepdim=True) / 255
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), blur[None, None])
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels).pow(2).sum(1, keepdim=True).sqrt()
        edge = g > threshold * g.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        out[i:i + chunk] = torch.where(edge, 0, 255).to(torch.uint8).numpy()
    return out


def with_sketches(base: str, name: str) -> Loader:
    """`base` images paired with their edge sketches (domain A = sketch, domain B = image)."""

    def load(root: Path | None) -> ImageData:
        data = DATASETS[base](root)
        return replace(data, name=name, train_a=edge_sketches(data.train_x), test_a=edge_sketches(data.test_x),
                       paired=True, domains=("sketch", "image"), source=f"edge sketches of {data.source}")

    return load


def class_domains(base: str, name: str, class_a: int, class_b: int) -> Loader:
    """Two classes of `base` as two unpaired domains (A -> B); FID uses `base`'s classifier."""

    def load(root: Path | None) -> ImageData:
        data = DATASETS[base](root)
        pick = lambda x, y, c: x[y == c]  # noqa: E731
        names = (data.classes[class_a], data.classes[class_b])
        return replace(data, name=name, train_a=pick(data.train_x, data.train_y, class_a),
                       test_a=pick(data.test_x, data.test_y, class_a),
                       train_x=pick(data.train_x, data.train_y, class_b),
                       train_y=data.train_y[data.train_y == class_b],
                       test_x=pick(data.test_x, data.test_y, class_b),
                       test_y=data.test_y[data.test_y == class_b],
                       paired=False, domains=names, feature_dataset=base,
                       source=f"{data.source}: {names[0]} -> {names[1]}")

    return load


register_dataset("fashion_mnist_edges", "Fashion-MNIST images paired with their edge sketches "
                 "(sketch -> image, as edges2shoes)")(with_sketches("fashion_mnist", "fashion_mnist_edges"))
register_dataset("digits_edges", "scikit-learn digits paired with their edge sketches; tiny, for tests")(
    with_sketches("digits", "digits_edges"))
register_dataset("sneaker2boot", "Fashion-MNIST Sneaker <-> Ankle boot as two unpaired domains")(
    class_domains("fashion_mnist", "sneaker2boot", 7, 9))
