"""CIFAR-10, read from torchvision's python batches: `cifar10`, and `cifar10_cats_dogs` (some of
its classes, --classes).

The batches are Python pickles: they are read through a restricted Unpickler that builds
only dicts, lists, str/bytes, numbers and numpy arrays of plain dtypes, and refuses every other
global (the project never unpickles arbitrary objects). This is the one module that may use
pickle.Unpickler (tests/test_security.py checks the sources).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from trainables.datasets.images import parse_names
from trainables.datasets.registry import DatasetError, ImageData, cache_dir, register_dataset


class _ArrayClass:
    """What a pickle gets for `numpy.ndarray`: only a marker for the reconstructor below."""


class _NumpyOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, str, numbers and numpy arrays of plain dtypes, nothing else:
    every global other than numpy's array reconstructors is refused (a pickle can run any code
    through a global, e.g. os.system; the project never unpickles arbitrary objects), and the
    result is checked to hold only those types."""

    @staticmethod
    def _dtype(*args):
        dtype = np.dtype(*args)
        if dtype.hasobject:
            raise pickle.UnpicklingError("object arrays are refused")
        return dtype

    @staticmethod
    def _reconstruct(cls, shape, dtype):
        if cls is not _ArrayClass:
            raise pickle.UnpicklingError("only plain numpy arrays are allowed")
        return np.ndarray.__new__(np.ndarray, shape, _NumpyOnly._dtype(dtype))

    @staticmethod
    def _frombuffer(buf, dtype, shape, order):
        return np.frombuffer(buf, dtype=_NumpyOnly._dtype(dtype)).reshape(shape, order=order)

    @staticmethod
    def _encode(text, encoding="utf-8"):  # how protocol 2 writes Python 3 bytes
        return text.encode(encoding)

    def find_class(self, module: str, name: str):
        numpy_core = module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                                "numpy._core.numeric")
        allowed = {("numpy", "ndarray"): _ArrayClass, ("numpy", "dtype"): self._dtype,
                   ("_codecs", "encode"): self._encode}
        if numpy_core and name == "_reconstruct":
            return self._reconstruct
        if numpy_core and name == "_frombuffer":
            return self._frombuffer
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}")


def _plain(obj, depth: int = 0) -> bool:
    """Whether `obj` is made only of dict/list/tuple/str/bytes/numbers/None and plain numpy arrays."""
    if depth > 20:
        return False
    if isinstance(obj, np.ndarray):
        return type(obj) is np.ndarray and not obj.dtype.hasobject
    if isinstance(obj, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain(v, depth + 1) for v in obj)
    return obj is None or type(obj) in (str, bytes, int, float, bool)


def read_cifar_pickle(path: Path) -> dict:
    """A CIFAR python batch -> a dict with str keys (the files come from Python 2: latin1 strings)."""
    try:
        with open(path, "rb") as f:
            raw = _NumpyOnly(f, encoding="latin1").load()
    except Exception as e:  # a damaged pickle raises many types; none of them runs code
        raise DatasetError(f"{path} is not a CIFAR batch file ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(raw, dict) or not _plain(raw):
        raise DatasetError(f"{path} is not a CIFAR batch file (it holds more than a dict of lists and arrays)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_pickle(path)
    try:
        x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, ValueError) as e:
        raise DatasetError(f"{path} lacks CIFAR-10's 'data' (N, 3072) and 'labels' ({type(e).__name__}: {e})") from None
    if len(x) != len(y):
        raise DatasetError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CIFAR_DIR = "cifar-10-batches-py"


def find_cifar(root: Path | None) -> Path | None:
    candidates = [root, root / CIFAR_DIR] if root is not None else [cache_dir() / "data" / CIFAR_DIR]
    return next((c for c in candidates if all((c / f).is_file() for f in CIFAR_FILES)), None)


def download_cifar() -> Path:
    """torchvision's CIFAR-10 archive (checked by md5), for users who are online. Only the download:
    torchvision's CIFAR10 class would unpickle the batches with plain pickle."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    folder = cache_dir() / "data"
    try:
        download_and_extract_archive(CIFAR10.url, str(folder), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except Exception as e:  # network errors come in many types
        raise DatasetError(f"cifar10 is not on this machine and could not be downloaded ({type(e).__name__}); pass "
                           f"--data-root DIR holding {CIFAR_DIR}/ (data_batch_1..5, test_batch, batches.meta)") from None
    return folder / CIFAR_DIR


def read_cifar10(root: Path | None, classes, name: str) -> ImageData:
    """CIFAR-10 (32x32 RGB, 50k + 10k), optionally only some classes (labels renumbered in the
    order given). The pickled batches are read with `_NumpyOnly`, never with plain pickle."""
    folder = find_cifar(root)
    if folder is None:
        if root is not None:
            raise DatasetError(f"no CIFAR-10 python batches ({', '.join(CIFAR_FILES)}) in {root} or {root / CIFAR_DIR}")
        folder = download_cifar()
    names = [str(n.decode() if isinstance(n, bytes) else n) for n in read_cifar_pickle(folder / "batches.meta")["label_names"]]
    parts = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    train_x, train_y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test_x, test_y = _cifar_batch(folder / "test_batch")
    if classes is not None:
        keep = parse_names(classes, "--classes")
        unknown = [c for c in keep if c not in names]
        if unknown:
            raise DatasetError(f"unknown CIFAR-10 class {unknown[0]!r}; known: {', '.join(names)}")
        ids = np.array([names.index(c) for c in keep])
        remap = np.full(len(names), -1, dtype=np.int64)
        remap[ids] = np.arange(len(ids))
        train_in, test_in = np.isin(train_y, ids), np.isin(test_y, ids)
        train_x, train_y, test_x, test_y = train_x[train_in], remap[train_y[train_in]], test_x[test_in], remap[test_y[test_in]]
        names = keep
    return ImageData(name, train_x, train_y, test_x, test_y, names, str(folder))


@register_dataset("cifar10", "CIFAR-10, 32x32 RGB, 50k+10k, 10 classes; --classes keeps some (--data-root DIR "
                  "with cifar-10-batches-py/, else torchvision's download)")
def cifar10(root: Path | None, classes=None) -> ImageData:
    return read_cifar10(root, classes, "cifar10")


@register_dataset("cifar10_cats_dogs", "CIFAR-10's cats and dogs (10k+2k, 2 classes; --classes picks others)")
def cifar10_cats_dogs(root: Path | None, classes="cat,dog") -> ImageData:
    return read_cifar10(root, classes, "cifar10_cats_dogs")
