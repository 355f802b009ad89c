"""Image files decoded once, with a cache: the loaders of folders and of CelebA read their images
through `decode_images`, at --image-size (`parse_size`: N or HxW) and --fit crop|pad|stretch, and
make one domain's images (or several domains') all grey or all RGB (`pooled_channels`,
`common_channels`). `parse_names` reads the loaders' --classes and --folders lists.

JPEG/PNG decoding is slow, so images are decoded once with PIL (in threads: PIL releases the GIL)
and the uint8 arrays are cached as .npz in `cache_dir()/decoded/`, keyed by the file list, their
sizes and mtimes and the options; a second load reads the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trainables.datasets.registry import DatasetError, cache_dir

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FITS = ("crop", "pad", "stretch")
DECODE_VERSION = 1  # bump when decoding changes, so old cache entries are not read


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


def parse_names(value, what: str) -> list[str]:
    """'cat,dog' or ['cat', 'dog'] -> ['cat', 'dog']."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if not names:
        raise DatasetError(f"{what}: no names given")
    return names


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


def pooled_channels(*parts: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    """Decoded (RGB images, grey flags) of one domain's splits -> arrays with one channel count:
    grey when most of all its images are grey (a small split can't turn the rest RGB)."""
    grey = np.concatenate([flags for _, flags in parts]).mean() > 0.5
    return [to_grey(images) if grey else images for images, _ in parts]
