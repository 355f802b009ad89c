"""What both benchmark scripts use: the project root on sys.path, and a real sweep through the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_sweep(model: str, storage: Path, name: str, *options: str) -> float:
    """`python -m orchestrator.sweep MODEL` into STORAGE/NAME (evaluations on 1000 images, no
    dashboard, no closing re-scoring: bench/winners_curse.py measures that); returns its wall
    time in seconds, or stops the bench with its output if it failed."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", model, "--storage", str(storage),
                           "--name", name, "--no-dashboard", "--eval-samples", "1000", "--rescore-top", "0", *options],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{model} sweep {name} failed\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start
