"""What every command line of the project shares: one-line errors and exit code 2 on bad input."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn

from trainables.errors import BadInput


class UsageError(BadInput):
    """Bad input from the user: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message} (see --help)")


def fail(message: str) -> NoReturn:
    # one line whatever the message quotes (a file name or an argument may hold a line break)
    print("error: " + " ".join(str(message).splitlines()), file=sys.stderr)
    raise SystemExit(2)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> NoReturn:
    try:
        code = main(argv)
    except BadInput as e:
        fail(e.args[0] if e.args else str(e))
    except KeyboardInterrupt:  # 130: a shell's exit status for Ctrl-C
        print("error: interrupted; what was written so far is kept", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)


# --- argument types -------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def image_size(text: str) -> int | str:
    """--image-size: N or HxW, checked as the loaders check it; a square is kept as its side (int), else 'HxW'."""
    from trainables.datasets.images import parse_size
    from trainables.errors import BadInput

    try:
        height, width = parse_size(text)
    except BadInput as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return height if height == width else f"{height}x{width}"


def fraction(text: str) -> float:
    """--heldout-fraction, checked as the loaders check it."""
    from trainables.datasets.splits import check_fraction
    from trainables.errors import BadInput

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    try:
        return check_fraction(value)
    except BadInput as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def feature_space(text: str) -> str:
    """--fid-features: one of FEATURE_KINDS, or an existing FILE.safetensors (a backbone's weights)."""
    from pathlib import Path

    from trainables.settings import FEATURE_KINDS, WEIGHTS_SUFFIX

    if text in FEATURE_KINDS:
        return text
    if text.endswith(WEIGHTS_SUFFIX):
        if not Path(text).is_file():
            raise argparse.ArgumentTypeError(f"no such weights file: {text}")
        return str(Path(text).resolve())
    raise argparse.ArgumentTypeError(f"{text!r} is none of {', '.join(FEATURE_KINDS)}, nor a FILE{WEIGHTS_SUFFIX}")


def device(text: str) -> str:
    """--device: a torch device this machine has (cpu, cuda, cuda:N, mps), refused in one line otherwise."""
    import torch

    try:
        chosen = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA GPU; use --device cpu")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine; use --device cpu")
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: use cpu, cuda, cuda:N or mps")
    return text


def add_family_module(parser: argparse.ArgumentParser) -> None:
    """--family-module, for commands that load a family of the user's own whose file has moved."""
    parser.add_argument("--family-module", action="append", default=[], metavar="FILE.py|MODULE",
                        help="a file or module defining model families of your own (default: where the "
                             "sweep or checkpoint says its family came from)")


def load_family_modules(args: argparse.Namespace) -> None:
    from trainables.models import load_family_module

    for module in args.family_module:
        load_family_module(module)
