"""Benchmark 8 of docs/benchmarks.md: the same sweep on a local disk and on S3, side by side.

A 4-trial ASHA sweep of in-process DCGAN trials on Fashion-MNIST (the demo's budget: 600 steps,
an evaluation and a checkpoint every 150), once with --storage on this machine's disk and once on
a real S3 server on the loopback (SeaweedFS, as the tests use), each starting its own local Ray.
Reports both wall times and their ratio, what the S3 run left in the bucket (bytes and objects
in all and per trial: checkpoints, Tune's files, the rest), and the bytes written per trial with
the pruned checkpoints counted (checkpoints written, from the trials' reports, times their size).

    python bench/storage.py [--trials N] [--steps N]

Prints a Markdown table and writes bench/results/storage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import ROOT, run_sweep  # noqa: E402  (puts the project on sys.path)

sys.path.insert(0, str(ROOT / "tests"))
import seaweedfs  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def bucket_usage(server: seaweedfs.S3Server, prefix: str) -> dict:
    import pyarrow.fs

    usage: dict[str, list[int]] = {}
    root = f"{server.bucket}/{prefix}/"
    for info in server.fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        if info.type != pyarrow.fs.FileType.File:
            continue
        key = info.path[len(root):]
        kind = ("checkpoints" if key.startswith("checkpoints/") else
                "tune trial files" if key.startswith("run_trial_") else "experiment files")
        usage.setdefault(kind, [0, 0])
        usage[kind][0] += info.size
        usage[kind][1] += 1
    return {kind: {"bytes": b, "objects": n} for kind, (b, n) in usage.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--steps", type=int, default=600)
    args = p.parse_args()
    options = ["--trials", str(args.trials), "--max-steps", str(args.steps), "--eval-every", str(args.steps // 4),
               "--log-every", "25", "--scheduler", "asha", "--seed", "0"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        server = seaweedfs.start(Path(tmp), "bench")
        os.environ.update(server.env)
        try:
            local = run_sweep("dcgan", Path(tmp) / "local", "local", *options)
            remote = run_sweep("dcgan", "s3://bench/experiments", "s3", *options)  # type: ignore[arg-type]
            usage = bucket_usage(server, "experiments/s3")
            from trainables.experiment import load_experiment

            exp = load_experiment("s3://bench/experiments/s3")
            written = sum(1 for t in exp.trials for r in t.results if r.get("checkpoint_path"))
            kept = sum(len(t.checkpoints) for t in exp.trials)
        finally:
            server.stop()
    total = sum(u["bytes"] for u in usage.values())
    per_checkpoint = usage["checkpoints"]["bytes"] / max(kept, 1)
    out = {"trials": args.trials, "steps": args.steps, "local_s": local, "s3_s": remote, "ratio": remote / local,
           "bucket": usage, "bytes_per_trial": total / args.trials, "checkpoints_written": written,
           "checkpoints_kept": kept, "bytes_per_checkpoint": per_checkpoint,
           "bytes_written_per_trial": (written * per_checkpoint + total - usage["checkpoints"]["bytes"]) / args.trials}
    (RESULTS / "storage.json").write_text(json.dumps(out, indent=1))
    print(f"| storage | wall time (s) |\n|---|---|\n| local disk | {local:.1f} |\n| S3 (SeaweedFS, loopback) | "
          f"{remote:.1f} |\n| ratio S3 / local | {remote / local:.2f}x |\n")
    print("| in the bucket | bytes | objects | bytes per trial |\n|---|---|---|---|")
    for kind, u in sorted(usage.items()):
        print(f"| {kind} | {u['bytes']:,} | {u['objects']} | {u['bytes'] / args.trials:,.0f} |")
    print(f"| all | {total:,} | {sum(u['objects'] for u in usage.values())} | {total / args.trials:,.0f} |")
    print(f"\n{written} checkpoints written ({kept} kept, {per_checkpoint / 1e6:.2f} MB each): about "
          f"{out['bytes_written_per_trial'] / 1e6:.1f} MB written to the bucket per trial, pruned checkpoints included")


if __name__ == "__main__":
    main()
