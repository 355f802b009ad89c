"""Datasets read from their own on-disk formats: CIFAR-10 (torchvision's python batches), CelebA
(aligned JPEGs + list_attr_celeba.txt), and folders of images: unpaired (trainA/ trainB/, as
CycleGAN's datasets ship), paired (two folders with matching file names, or pix2pix's side-by-side
A|B images) and a plain image folder (e.g. signatures: any size and mode).

CIFAR-10's batches are Python pickles: they are read through a restricted Unpickler that builds
only dicts, lists, str/bytes, numbers and numpy arrays of plain dtypes, and refuses every other
global (the project never unpickles arbitrary objects).

Label-free folders (one image folder, two domains) get a self-supervised FID/KID feature network:
a classifier of the images' rotation (`NAME_rotations`, see `rotated`).

Options (the sweep's --image-size, --fit, --classes, --attribute, --folders, --swap-domains) are
the loaders' keyword arguments; `load_dataset(name, root, options={...})` passes them.

JPEG/PNG decoding is slow, so images are decoded once with PIL (in threads: PIL releases the GIL)
and the uint8 arrays are cached as .npz in `cache_dir()/decoded/`, keyed by the file list, their
sizes and mtimes and the options; a second load reads the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trainables.datasets.registry import DatasetError, ImageData, cache_dir, register_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FITS = ("crop", "pad", "stretch")
DECODE_VERSION = 1  # bump when decoding changes, so old cache entries are not read
HOLDOUT = 0.1  # share of images held out when a layout has no test folder (--heldout-fraction)
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def parse_size(value) -> tuple[int, int]:
    """--image-size: N (a square), 'HxW' (e.g. '64x128': 64 high, 128 wide) or [H, W] -> (H, W)."""
    try:
        if isinstance(value, str):
            parts = [int(v) for v in value.lower().split("x")]
        else:
            parts = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
        if isinstance(value, float) or len(parts) not in (1, 2):
            raise ValueError
    except (TypeError, ValueError):
        raise DatasetError(f"image size must be N or HxW (e.g. 64 or 64x128), got {value!r}") from None
    height, width = parts * 2 if len(parts) == 1 else parts
    if not (4 <= height <= 1024 and 4 <= width <= 1024):
        raise DatasetError(f"image sides must be whole numbers from 4 to 1024, got {height}x{width}")
    return height, width


# --- decoding image files, once, with a cache --------------------------------------------------

def list_images(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name (os.scandir: no stat per file)."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()]
    return [folder / name for name in sorted(names)]


def image_files(folder: Path, what: str) -> list[Path]:
    """The image files directly in `folder`, sorted by name; missing or empty is bad input."""
    if not folder.is_dir():
        raise DatasetError(f"{what}: {folder} is not a directory")
    files = list_images(folder)
    if not files:
        raise DatasetError(f"{what}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def _fit(img, size: tuple[int, int], fit: str):
    """A PIL RGB image -> (height, width) `size`: center `crop` to its aspect ratio, `pad` to it
    (with the border's median colour, e.g. a signature's paper), or `stretch`."""
    from PIL import Image

    height, width = size
    w, h = img.size
    if fit == "stretch":
        return img.resize((width, height), Image.BICUBIC)
    if fit == "crop":
        scale = min(w / width, h / height)
        cw, ch = width * scale, height * scale
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        return img.resize((width, height), Image.BICUBIC, box=box)
    scale = min(width / w, height / h)
    inner = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    a = np.asarray(img)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    out = Image.new("RGB", (width, height), tuple(int(c) for c in np.median(border, axis=0)))
    out.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
    return out


def decode_image(path: Path, size: tuple[int, int], fit: str, halves: bool) -> tuple[np.ndarray, bool]:
    """One file -> (uint8 RGB (3, H, W), or (2, 3, H, W) for a side-by-side A|B image; whether the
    file is a grey image). Transparent pixels become white."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
            if img.format == "JPEG" and not halves and fit == "crop":  # decode at a reduced scale
                scale = max(size[0] / img.height, size[1] / img.width)
                img.draft("RGB", (int(img.width * scale), int(img.height * scale)))
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img.alpha_composite(rgba)
            img = img.convert("RGB")
            if halves:
                w = img.width // 2
                parts = [img.crop((0, 0, w, img.height)), img.crop((w, 0, 2 * w, img.height))]
                return np.stack([np.asarray(_fit(p, size, fit)).transpose(2, 0, 1) for p in parts]), grey
            return np.asarray(_fit(img, size, fit)).transpose(2, 0, 1), grey
    except Exception as e:  # PIL raises many types for a broken file (OSError, SyntaxError, struct.error, ...)
        raise DatasetError(f"{path} is not a readable image ({type(e).__name__}: {str(e)[:80]})") from None


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3, H, W) -> (..., 1, H, W) with PIL's "L" formula (exact for grey images)."""
    r, g, b = (rgb[..., i:i + 1, :, :].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _cache_key(files: list[Path], params: dict) -> str:
    h = hashlib.sha256(json.dumps({**params, "version": DECODE_VERSION}, sort_keys=True).encode())
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            raise DatasetError(f"{f} is missing or unreadable") from None
        h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def decode_images(files: list[Path], size, fit: str = "crop", halves: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Files -> (uint8 RGB (N, 3, H, W), or (N, 2, 3, H, W) with `halves`; bool (N,) whether each
    file is grey), `size` N or HxW (parse_size). Decoded once; later calls read
    `cache_dir()/decoded/KEY.npz`."""
    if fit not in FITS:
        raise DatasetError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    size = parse_size(size)
    key = {"size": size[0] if size[0] == size[1] else list(size), "fit": fit, "halves": halves}  # squares: as before
    path = cache_dir() / "decoded" / f"{_cache_key(files, key)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                return cached["images"], cached["grey"]
        except (OSError, ValueError, KeyError):  # a damaged cache entry is decoded again
            pass
    start, long = time.time(), len(files) > 2000
    if long:
        print(f"decoding {len(files)} images from {files[0].parent} (once; cached in {path.parent}) ...",
              file=sys.stderr, flush=True)
    images = np.empty((len(files), *((2,) if halves else ()), 3, *size), dtype=np.uint8)
    grey = np.empty(len(files), dtype=bool)

    def decode(file: Path):
        try:
            return decode_image(file, size, fit, halves)
        except DatasetError as e:  # every bad file is named in one pass, not one a run
            return e

    bad = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, outcome in enumerate(pool.map(decode, files)):
            if isinstance(outcome, DatasetError):
                bad.append((files[i], outcome))
            elif not bad:
                images[i], grey[i] = outcome
    if len(bad) == 1:
        raise bad[0][1]  # its own message: what is wrong with it
    if bad:
        raise DatasetError(f"{len(bad)} of {len(files)} files are not readable images: "
                           f"{', '.join(str(f) for f, _ in bad[:10])}{' ...' if len(bad) > 10 else ''}; fix or remove them")
    if long:
        print(f"decoded {len(files)} images in {time.time() - start:.1f} s", file=sys.stderr, flush=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, images=images, grey=grey)
        os.replace(tmp, path)
    except OSError as e:  # the cache only saves time
        print(f"note: could not cache decoded images in {path.parent} ({e.strerror})", file=sys.stderr)
    return images, grey


def common_channels(*domains: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    """Decoded (RGB images, grey flags) of one or more domains -> arrays with one channel count:
    grey when most images of every domain are grey, else RGB (so one feature network sees all)."""
    grey = all(flags.mean() > 0.5 for _, flags in domains)
    return [to_grey(images) if grey else images for images, _ in domains]


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


def pooled_channels(*parts: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    """Decoded (RGB images, grey flags) of one domain's splits -> arrays with one channel count:
    grey when most of all its images are grey (a small split can't turn the rest RGB)."""
    grey = np.concatenate([flags for _, flags in parts]).mean() > 0.5
    return [to_grey(images) if grey else images for images, _ in parts]


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


def parse_names(value, what: str) -> list[str]:
    """'cat,dog' or ['cat', 'dog'] -> ['cat', 'dog']."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if not names:
        raise DatasetError(f"{what}: no names given")
    return names


def need_root(name: str, root: Path | None, what: str) -> Path:
    if root is None:
        raise DatasetError(f"dataset {name} needs --data-root DIR: {what}")
    return root


# --- CIFAR-10: torchvision's python batches, read without unpickling objects -------------------

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


# --- CelebA: img_align_celeba/*.jpg + list_attr_celeba.txt -------------------------------------

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


# --- folders of images ---------------------------------------------------------------------------

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


def held_out_parts(parts: dict) -> tuple:
    """A layout's splits -> (train, test, val): test is test/ (else val/), val is val/ only where
    test/ exists too (a sweep then evaluates on val, rescore and infer on test)."""
    test = parts.get("test", parts.get("val"))
    return parts["train"], test, parts.get("val") if "test" in parts else None


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
