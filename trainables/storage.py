"""Where an experiment lives: a local or NFS path, or a URI that pyarrow reaches (s3://, gs://, ...).

Every reader and writer of an experiment goes through `location()`, so no other module asks
whether a path is a URI. Object stores have no folders and no rename, so a checkpoint is made
atomic by a marker written after all its files (`COMPLETE`): readers treat a checkpoint folder
without it as absent, on every storage. Remote experiments are read from a local mirror of their
small files (`pull`), cached under ~/.cache/gen-orchestrator/remote/; weights are downloaded only
for the checkpoints a command uses. No torch and no Ray here: the CLIs import this before either.
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import json
import math
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow.fs

from trainables.errors import BadInput
from trainables.layout import COMPLETE, CONFIG, METRICS

UNMARKED_VERSION = "0.1.0"  # the code_version of checkpoints from before the marker (see is_complete)
WEIGHT_SUFFIXES = (".safetensors", ".pt")  # downloaded only for the checkpoints a command uses
NEVER_PULLED = (".pkl",)  # Tune's pickled state: only `--resume` reads it, through Ray, never a reader
PARTIAL = ".part"  # a download in progress (another process's, maybe): never taken for a stale file
REACH_SECONDS, REACH_ENV = 10, "ORCHESTRATOR_REACH_SECONDS"  # how long storage (or MLflow) may take to answer
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


class StorageError(BadInput):
    """Storage that can't be reached, read or written; the message says which and why."""


def cache_root() -> Path:
    """Where downloads, trained feature networks and remote mirrors are kept (ORCHESTRATOR_CACHE overrides)."""
    return Path(os.environ.get("ORCHESTRATOR_CACHE", Path.home() / ".cache" / "gen-orchestrator"))


def is_uri(text: str) -> bool:
    return bool(_URI.match(str(text)))


@dataclass(frozen=True)
class Location:
    """A file or folder on one filesystem: `fs` and the `path` inside it; `uri` is how to name it
    to Ray, a user or this module again (an absolute path for local disks)."""

    fs: pyarrow.fs.FileSystem
    path: str
    uri: str

    @property
    def remote(self) -> bool:
        return not isinstance(self.fs, pyarrow.fs.LocalFileSystem)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> Location:
        return Location(self.fs, self.path.rstrip("/").rsplit("/", 1)[0], self.uri.rstrip("/").rsplit("/", 1)[0])

    @property
    def local(self) -> Path:
        """The local path (only for a local location)."""
        assert not self.remote, self.uri
        return Path(self.path)

    def __truediv__(self, name: str) -> Location:
        name = str(name).strip("/")
        return Location(self.fs, f"{self.path.rstrip('/')}/{name}", f"{self.uri.rstrip('/')}/{name}")

    def __str__(self) -> str:
        return self.uri

    def info(self) -> pyarrow.fs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pyarrow.fs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pyarrow.fs.FileType.File

    def listdir(self, recursive: bool = False) -> list[pyarrow.fs.FileInfo]:
        """What the folder holds ([] when it doesn't exist)."""
        return self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True, recursive=recursive))

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """One object written whole (an object store shows it only once complete); on a local disk
        a new file renamed into place, so a reader never sees half of it."""
        if not self.remote:
            path = self.local
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)  # a full disk must not keep half a file
                raise
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def upload(self, local: Path) -> None:
        """A local file or folder copied here."""
        if local.is_dir():
            self.fs.create_dir(self.path, recursive=True)
            pyarrow.fs.copy_files(str(local), self.path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                  destination_filesystem=self.fs)
        else:
            self.write_bytes(local.read_bytes())

    def delete_dir(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.path)

    def delete_file(self) -> None:
        if self.is_file():
            self.fs.delete_file(self.path)


def location(text: str | Path) -> Location:
    """A local path (made absolute), a file:// URI, or any URI pyarrow's FileSystem.from_uri takes.
    Opening an s3:// URI can ask the network (the bucket's region, where no endpoint is set), so it
    is given reach_seconds()."""
    text = str(text)
    if is_uri(text) and not text.startswith("file://"):
        if "?" in text or "#" in text:
            raise StorageError(f"storage {text!r}: give the store's options in the environment (e.g. "
                               f"AWS_ENDPOINT_URL, AWS_REGION), not in the URI")
        scheme, rest = text.split("://", 1)
        if not rest.strip("/"):
            raise StorageError(f"storage {text!r} names no bucket: give {scheme}://BUCKET[/PREFIX]")
        fs, path = _bounded(lambda: pyarrow.fs.FileSystem.from_uri(text), f"storage {text}")
        return Location(fs, path.rstrip("/"), text.rstrip("/"))
    path = str(Path(text.removeprefix("file://")).expanduser().resolve())
    return Location(pyarrow.fs.LocalFileSystem(), path, path)


def env_seconds(name: str, default: float, zero_ok: bool = False) -> float:
    """A number of seconds from $NAME, read when called: `default` where it is unset, not a finite
    number, negative, or 0 unless `zero_ok` (a mistyped value changes nothing rather than failing
    mid-sweep)."""
    try:
        seconds = float(os.environ.get(name, default))
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and (seconds > 0 or (zero_ok and seconds == 0)) else default


def reach_seconds() -> float:
    """How long a store or server may take to answer before a command calls it unreachable:
    $ORCHESTRATOR_REACH_SECONDS where it is a positive number (a slow link), else REACH_SECONDS."""
    return env_seconds(REACH_ENV, REACH_SECONDS)


def _bounded(call, what: str, seconds: float | None = None):
    """call() in a thread, given `seconds` (reach_seconds()); its errors (and silence) as one-line
    StorageErrors."""
    outcome: list = []
    seconds = seconds or reach_seconds()

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as e:  # noqa: BLE001  (reported by the caller's thread)
            outcome.append((False, e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise StorageError(f"{what} did not answer within {seconds:g} s; check the endpoint (AWS_ENDPOINT_URL) "
                           f"and the network")
    ok, value = outcome[0]
    if ok:
        return value
    if isinstance(value, StorageError):
        raise value
    if isinstance(value, (OSError, ValueError, pyarrow.ArrowException)):
        raise StorageError(f"cannot open {what} ({first_line(value)}){hint(first_line(value))}") from None
    raise value


def hint(text: str) -> str:
    """What to check, for a storage error's text."""
    if "ACCESS_DENIED" in text or "SIGNATURE" in text or "credentials" in text.lower() or "403" in text:
        return "; check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or the instance role)"
    if "NETWORK_CONNECTION" in text or "connect" in text.lower() or "resolv" in text.lower():
        return "; check the endpoint (AWS_ENDPOINT_URL), the bucket's name and the network"
    return ""


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- checkpoints: complete only once their marker is there ---------------------------------------

def mark_complete(folder: Location) -> None:
    """Write the marker of a checkpoint whose every file is in place."""
    files = {info.path.rsplit("/", 1)[-1]: info.size for info in folder.listdir()
             if info.type == pyarrow.fs.FileType.File and not info.path.endswith(f"/{COMPLETE}")}
    (folder / COMPLETE).write_text(json.dumps({"files": files}))


def is_complete(folder: Location) -> bool:
    """Whether a checkpoint folder is whole: its marker is there, or it was written by version
    0.1.0, before markers (complete by their rename on a local disk, or by Ray Train's upload),
    whose checkpoints must not be taken for half-written ones and deleted on `--resume`."""
    if (folder / COMPLETE).is_file():
        return True
    try:
        config = json.loads((folder / CONFIG).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("code_version") == UNMARKED_VERSION and \
        (folder / METRICS).is_file()  # not the weights: a mirror (pull) has none


def delete_checkpoint(folder: Location) -> None:
    """Marker first: a deletion cut short (object stores delete key by key) leaves no checkpoint
    that looks complete."""
    (folder / COMPLETE).delete_file()
    folder.delete_dir()


# --- a full disk or bucket ------------------------------------------------------------------------

FULL_ERRORS = ("No space left on device", "QuotaExceeded", "InsufficientStorage", "StorageFull",
               "XMinioStorageFull")  # ENOSPC's text, and what S3-compatible stores answer when full


def is_full(error: OSError) -> bool:
    """Whether a write failed because the disk or bucket is full (or over its quota)."""
    return error.errno == errno.ENOSPC or any(text in str(error) for text in FULL_ERRORS)


def full_cause(error: BaseException) -> BaseException | None:
    """The error in `error`'s chain that says the storage is full: an OSError, or one SQLite wraps
    (Optuna's study is an SQLite file in the experiment), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if (isinstance(error, OSError) and is_full(error)) or "database or disk is full" in str(error):
            return error
        error = error.__cause__ or error.__context__
    return None


def megabytes(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def full_message(where: Location, needed: int) -> str:
    """One line: what is full, how much the failed write needed, how much is free (local disks)."""
    free = ""
    if not where.remote:
        existing = next(p for p in (where.local, *where.local.parents) if p.exists())
        free = f", {megabytes(shutil.disk_usage(existing).free)} free"
    return (f"storage {where} is full: a checkpoint of {megabytes(needed)} did not fit{free}; free space (or raise "
            f"the quota), then --resume")


# --- reading remote experiments through a local mirror ------------------------------------------

def mirror_path(loc: Location) -> Path:
    """The local folder that mirrors a remote location: cache/remote/<scheme>/<bucket>/<path>."""
    scheme = loc.uri.split("://", 1)[0]
    parts = [p for p in loc.path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise StorageError(f"{loc.uri} is not a plain storage path")
    return cache_root() / "remote" / scheme / Path(*parts)


def _inside(root: Path, relative: str) -> Path:
    """root/relative, where relative comes from a listing: it must stay inside root."""
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("", ".", "..") for p in parts) or relative.startswith("/"):
        raise StorageError(f"refusing the storage key {relative!r}: not a plain relative path")
    return root.joinpath(*parts)


def pull(loc: Location, dst: Path | None = None, weights: bool = False, threads: int = 8) -> Path:
    """Mirror a remote folder into `dst` (default: its cache folder) and return that folder.

    Only what changed is downloaded (size and time); files gone from the store are removed from
    the mirror (a pruned checkpoint must not look kept). Directory-marker keys are skipped, Tune's
    pickles never come, and weights only with `weights=True`. A local location is returned as is."""
    if not loc.remote:
        return loc.local
    dst = dst or mirror_path(loc)
    try:
        listing = loc.listdir(recursive=True)
    except OSError as e:
        raise StorageError(f"cannot list {loc.uri} ({first_line(e)})") from None
    wanted: dict[Path, pyarrow.fs.FileInfo] = {}
    prefix = loc.path.rstrip("/") + "/"
    for info in listing:
        if info.type != pyarrow.fs.FileType.File or not info.path.startswith(prefix):
            continue  # folders and S3's directory markers
        relative = info.path[len(prefix):]
        if relative.endswith(NEVER_PULLED) or (not weights and relative.endswith(WEIGHT_SUFFIXES)):
            continue
        wanted[_inside(dst, relative)] = info

    def fetch(target: Path, info: pyarrow.fs.FileInfo) -> None:
        mtime = info.mtime.timestamp() if info.mtime else None
        if target.is_file() and target.stat().st_size == info.size and mtime and target.stat().st_mtime == mtime:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL}")
        try:
            with loc.fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            if mtime:
                os.utime(tmp, (mtime, mtime))
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    dst.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(fetch, target, info) for target, info in wanted.items()]:
            try:
                future.result()
            except OSError as e:  # gone since the listing (pruned), or the store went away
                if not isinstance(e, FileNotFoundError) and "NO_SUCH_KEY" not in str(e):
                    raise StorageError(f"cannot download from {loc.uri} ({first_line(e)})") from None
    kept_folders = {target.parent for target in wanted}  # weights downloaded earlier stay beside their files
    for path in sorted(dst.rglob("*"), reverse=True):  # deepest first, so emptied folders go too
        if path.is_file() and path not in wanted and not path.name.endswith(PARTIAL) and (
                weights or not path.name.endswith(WEIGHT_SUFFIXES) or path.parent not in kept_folders):
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return dst


def local_copy(text: str | Path) -> tuple[Path, Location]:
    """A folder to read with plain file access: the local folder itself, or a remote one's mirror
    (small files only). Returns (local folder, where it really is)."""
    loc = location(text)
    if not loc.remote:
        return loc.local, loc
    # bounded, as the sweep's probe is: an unreachable store's client retries for minutes, silent
    if not _bounded(loc.exists, f"storage {loc.uri}"):
        raise StorageError(f"{loc.uri} does not exist")
    return pull(loc), loc


# --- checks before a sweep starts ------------------------------------------------------------------

def check_reachable(loc: Location, seconds: float | None = None) -> None:
    """Refuse remote storage that doesn't answer within `seconds`, whose bucket does not exist, or
    that won't take a write (no or wrong credentials): one line each, before Ray starts."""
    if not loc.remote:
        return

    def probe() -> None:
        bucket = loc.path.split("/", 1)[0]
        if isinstance(loc.fs, pyarrow.fs.S3FileSystem) and loc.fs.get_file_info(bucket).type == \
                pyarrow.fs.FileType.NotFound:
            raise StorageError(f"the bucket {bucket!r} of {loc.uri} does not exist; create it or fix --storage")
        test = loc / f".write-test-{hashlib.sha1(os.urandom(8)).hexdigest()[:12]}"
        test.write_bytes(b"")
        test.delete_file()

    _bounded(probe, f"storage {loc.uri} for writing", seconds)
