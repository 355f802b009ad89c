"""python -m orchestrator.infer CHECKPOINT_DIR MODE [options]: use a checkpoint.

Modes (each family lists its own in `python -m orchestrator.sweep --list`):
  sample   write a grid of N generated images

From Python:
    from orchestrator.infer import load_checkpoint
    model = load_checkpoint("experiments/NAME/best/rank1-...")   # CPU or GPU, eval mode
    images = model.sample(16, seed=0)                             # (16, C, H, W) in [-1, 1]

Loading reads JSON and safetensors only; it never unpickles anything from the checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli import Parser, UsageError, run
from trainables.checkpoints import LoadedModel, load_checkpoint, save_grid

__all__ = ["load_checkpoint", "LoadedModel"]


def sample(model: LoadedModel, args: argparse.Namespace) -> Path:
    out = Path(args.out or "samples.png")
    save_grid(model.sample(args.n, seed=args.seed), out)
    return out


MODES = {"sample": sample}


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m orchestrator.infer", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint directory (from orchestrator.best, or any checkpoint_* folder)")
    p.add_argument("mode", choices=sorted(MODES), help="what to do with it")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", help="output PNG (default samples.png)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    args = p.parse_args(argv)
    if args.n < 1:
        raise UsageError(f"--n must be 1 or more, got {args.n}")
    model = load_checkpoint(args.checkpoint, args.device)
    if args.mode not in model.family.inference_modes:
        raise UsageError(f"{model.family.name} checkpoints support {', '.join(model.family.inference_modes)}, not {args.mode}")
    print(MODES[args.mode](model, args))
    return 0


if __name__ == "__main__":
    run(main)
