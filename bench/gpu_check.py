"""The GPU path measured in one run (docs/benchmarks.md row 7; run by bench/gpu_check.sh):

1. images/s of the training step of dcgan, cyclegan and ddpm on 64x64 RGB images, in fp32, bf16
   and bf16 + channels_last, and the GPU memory each takes (torch's peak allocation);
2. a 4-trial dcgan sweep with --gpus-per-worker 0.5, so two trials share the GPU: its wall time,
   the GPU's utilisation and memory during it (nvidia-smi, every 0.5 s);
3. a 2-worker DDP trial on the one GPU (NCCL may refuse two processes on one device: then its
   one-line reason).

Prints one Markdown table and writes gpu_check.json to --out. The images are random (a step's
speed doesn't depend on what they show); the sweeps use `digits` (scikit-learn's, on every machine).

    python bench/gpu_check.py [--device cuda] [--steps 50] [--out DIR] [--skip-sweeps] [--families F ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT  # noqa: E402  (puts the project on sys.path)
from trainables.datasets import ImageData  # noqa: E402
from trainables.family import loss_scaling  # noqa: E402
from trainables.loop import autocast, index_batches, next_batch  # noqa: E402
from trainables.models import get_family  # noqa: E402

FAMILIES = ("dcgan", "cyclegan", "ddpm")
MODES = (("fp32", False), ("bf16", False), ("bf16", True))  # (precision, channels_last)
SIZE = 64


def random_images(family, n: int = 512) -> ImageData:
    """n random 64x64 RGB images, of two domains for the translators."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, SIZE, SIZE), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    two = family.data_kind != "images"
    return ImageData("random64", images, labels, images[:64], labels[:64], [str(i) for i in range(10)], "random",
                     train_a=images[::-1].copy() if two else None, test_a=images[:64] if two else None,
                     paired=family.data_kind == "paired")


def images_per_second(name: str, precision: str, channels_last: bool, device: torch.device, steps: int) -> dict:
    """The training step alone (as the loop runs it), after warm-up; the peak memory it took."""
    family = get_family(name)
    hp = dict(family.defaults)
    data = family.prepare_data(random_images(family), hp)
    torch.manual_seed(0)
    modules = {k: m.to(device) for k, m in family.build(hp, data.info()).items()}
    if channels_last:
        modules = {k: m.to(memory_format=torch.channels_last) for k, m in modules.items()}
    optimizers = family.optimizers(modules, hp)
    batches = index_batches(len(data.train_x), hp["batch_size"], 0, 1, 0, 0)
    batches_a = index_batches(len(data.train_a), hp["batch_size"], 0, 1, 0, 0, stream=1) \
        if family.data_kind == "unpaired" else None
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def step() -> None:
        batch = next_batch(data, family, batches, batches_a, device, channels_last)
        with autocast(device, precision), loss_scaling(scaler):
            family.train_step(modules, optimizers, batch, hp)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(max(2, steps // 5)):
        step()
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"family": name, "precision": precision, "channels_last": channels_last, "batch_size": hp["batch_size"],
            "images_per_s": steps * hp["batch_size"] / seconds, "peak_gib": peak}


class GpuSampler:
    """nvidia-smi's utilisation and memory of GPU 0 every 0.5 s, in a thread, while a command runs."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5).stdout
                util, memory = (float(v) for v in out.strip().split(","))
                self.samples.append((util, memory / 1024))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self.stop.wait(0.5)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": float("nan"), "gpu_memory_max_gib": float("nan")}
        return {"gpu_util_mean": sum(u for u, _ in self.samples) / len(self.samples),
                "gpu_memory_max_gib": max(m for _, m in self.samples)}


def sweep(storage: Path, name: str, *options: str, timeout: float = 240) -> dict:
    """A real sweep through the CLI; its exit code, wall time, last stderr line and best FID."""
    command = [sys.executable, "-m", "orchestrator.sweep", "dcgan", "--dataset", "digits", "--storage", str(storage),
               "--name", name, "--no-dashboard", "--scheduler", "fifo", "--eval-samples", "500", "--rescore-top", "0",
               *options]
    start = time.perf_counter()
    with GpuSampler() as gpu:
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            code, said = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            code, said = 124, f"timed out after {timeout:.0f} s"
    result = {"exit": code, "wall_seconds": time.perf_counter() - start, "last_stderr_line": said[:300],
              **gpu.summary()}
    fids = [json.loads(p.read_text()).get("fid") for p in (storage / name).glob("checkpoints/*/*/metrics.json")]
    result["best_fid"] = min((f for f in fids if isinstance(f, (int, float))), default=float("nan"))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=50, help="timed steps per family and mode (default 50)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--skip-sweeps", action="store_true", help="the step throughput only (no Ray)")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = p.parse_args()
    device = torch.device(args.device)
    start = time.perf_counter()
    rows = [images_per_second(name, precision, channels_last, device, args.steps)
            for name in args.families for precision, channels_last in MODES]
    for row in rows:
        print(json.dumps(row), flush=True)
    sweeps = {}
    if not args.skip_sweeps:
        gpus = "0.5" if device.type == "cuda" else "0"
        with tempfile.TemporaryDirectory() as tmp:
            sweeps["four_trials_half_gpu"] = sweep(Path(tmp), "four", "--trials", "4", "--max-steps", "600",
                                                   "--eval-every", "150", "--gpus-per-worker", gpus,
                                                   "--cpus-per-worker", "2", "--precision", "bf16")
            sweeps["ddp_two_workers_one_gpu"] = sweep(Path(tmp), "ddp", "--trials", "1", "--max-steps", "100",
                                                      "--eval-every", "50", "--workers-per-trial", "2",
                                                      "--gpus-per-worker", gpus, "--cpus-per-worker", "2")
        for key, value in sweeps.items():
            print(json.dumps({key: value}), flush=True)
    wall = time.perf_counter() - start
    facts = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
             "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"), "wall_seconds": wall}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"machine": facts, "throughput": rows, "sweeps": sweeps}, indent=1))

    print(f"\n{facts['device']}, torch {facts['torch']}, {wall:.0f} s in all")
    print("| family | batch | img/s fp32 | img/s bf16 | img/s bf16 + channels_last | peak GiB fp32 / bf16 / bf16+cl |")
    print("|---|---|---|---|---|---|")
    for name in args.families:
        mine = [r for r in rows if r["family"] == name]
        print(f"| `{name}` | {mine[0]['batch_size']} | " + " | ".join(f"{r['images_per_s']:.0f}" for r in mine)
              + " | " + " / ".join(f"{r['peak_gib']:.2f}" for r in mine) + " |")
    for key, s in sweeps.items():
        print(f"| {key} | exit {s['exit']} | {s['wall_seconds']:.0f} s | GPU util mean {s['gpu_util_mean']:.0f}% "
              f"| GPU memory max {s['gpu_memory_max_gib']:.1f} GiB | best FID {s['best_fid']:.1f}; {s['last_stderr_line']} |")


if __name__ == "__main__":
    main()
