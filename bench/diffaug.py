"""DiffAugment on little data and on all of it (issue 17): DCGAN on Fashion-MNIST, `--quick` sweeps
with `diffaug` fixed to none, fixed to color+translation+cutout, and searched, on the first 500
training images and on all 60,000; each winner re-scored (3 seeds x 10,000 held-out images). Also
what a DiffAugment policy and a training-time `augment` cost per training step (docs/benchmarks.md).

    python bench/diffaug.py [--storage DIR] [--seed S] [--only-cost]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import ROOT, run_sweep

VARIANTS = {"none": ["--set", "diffaug=none"], "color+translation+cutout": ["--set", "diffaug=color+translation+cutout"],
            "searched": []}
SUBSETS = {"500": ["--subset", "500"], "60000": []}


def step_cost(steps: int = 40, repeats: int = 3) -> dict[str, float]:
    """Milliseconds of one DCGAN training step (batch 64, Fashion-MNIST 28x28, one thread) per
    DiffAugment policy and per training-time `augment` (applied to the batch as the loop does),
    interleaved, each the median of `repeats` runs of `steps` steps."""
    import statistics

    import torch

    from trainables.augment import augment_batch, background
    from trainables.datasets import load_dataset
    from trainables.feature_networks import to_float
    from trainables.models import get_family

    torch.set_num_threads(1)
    family, data = get_family("dcgan"), load_dataset("fashion_mnist")
    hp = dict(family.defaults)
    modules = family.build(hp, data.info())
    optimizers = family.optimizers(modules, hp)
    batch = {"x": to_float(torch.from_numpy(data.train_x[:64])), "y": torch.from_numpy(data.train_y[:64])}
    fills = {"x": background(data.train_x)}  # as the loop works it out, once per trial
    variants = {policy: {"diffaug": policy} for policy in ["none", "translation", "color", "cutout",
                                                           "color+translation+cutout"]}
    variants.update({f"augment {a}": {"augment": a} for a in ["flip", "rotate", "jitter", "crop",
                                                                "flip+rotate+jitter+crop"]})

    def step(trial_hp: dict) -> None:
        family.train_step(modules, optimizers, augment_batch(batch, trial_hp["augment"], False, fills), trial_hp)

    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for name, changes in variants.items():
            trial_hp = {**hp, **changes}
            step(trial_hp)  # warm-up
            start = time.perf_counter()
            for _ in range(steps):
                step(trial_hp)
            times[name].append(1000 * (time.perf_counter() - start) / steps)
    return {v: statistics.median(t) for v, t in times.items()}


def augment_cost(steps: int = 40, repeats: int = 5) -> dict[str, float]:
    """Milliseconds of `augment_batch` alone on the same batch (64 Fashion-MNIST images, one
    thread), each the median of `repeats` runs of `steps` calls: the part of a step it adds, free
    of the step's own run-to-run noise."""
    import statistics

    import torch

    from trainables.augment import augment_batch, background
    from trainables.datasets import load_dataset
    from trainables.feature_networks import to_float

    torch.set_num_threads(1)
    data = load_dataset("fashion_mnist")
    batch, fills = {"x": to_float(torch.from_numpy(data.train_x[:64]))}, {"x": background(data.train_x)}
    times = {}
    for policy in ["flip", "rotate", "jitter", "crop", "flip+rotate+jitter+crop"]:
        augment_batch(batch, policy, False, fills)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                augment_batch(batch, policy, False, fills)
            runs.append(1000 * (time.perf_counter() - start) / steps)
        times[policy] = statistics.median(runs)
    return times


def rescored(exp) -> dict:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.rescore", str(exp), "--top", "1"], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"rescore {exp} failed\n{proc.stderr[-2000:]}")
    return json.loads((exp / "rescore.json").read_text())["checkpoints"][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", default="/tmp/bench-diffaug")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-cost", action="store_true")
    args = p.parse_args()
    from pathlib import Path

    from trainables.experiment import load_experiment

    cost = step_cost()
    base = cost["none"]
    print("ms per DCGAN step (batch 64, 1 thread): " + ", ".join(f"{k} {v:.1f} ({v / base:.2f}x)" for k, v in cost.items()),
          flush=True)
    alone = augment_cost()
    print("ms of augment_batch alone, same batch: " + ", ".join(f"{k} {v:.2f} ({v / base:.1%} of a step)"
                                                              for k, v in alone.items()), flush=True)
    if args.only_cost:
        return
    rows = []
    storage = Path(args.storage)
    for subset, subset_args in SUBSETS.items():
        for variant, variant_args in VARIANTS.items():
            name = f"dcgan-{subset}-{variant.replace('+', '_')}-s{args.seed}"
            wall = run_sweep("dcgan", storage, name, "--quick", "--seed", str(args.seed), *subset_args, *variant_args)
            exp = load_experiment(storage / name)
            trial, ckpt = exp.ranked_checkpoints()[0]
            again = rescored(storage / name)
            rows.append({"images": subset, "diffaug": variant, "winner_diffaug": trial.params.get("diffaug"),
                         "sweep_fid": ckpt.metrics["fid"], "rescored_fid": again["mean"], "ci95": again["ci95"],
                         "trial_steps": sum(t.last_step for t in exp.trials), "wall_s": round(wall)})
            print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"diffaug-s{args.seed}.json").write_text(json.dumps({"step_ms": cost, "sweeps": rows}, indent=1))
    print("| images | diffaug | winner's diffaug | sweep's best FID | re-scored FID [95%] | trial-steps | wall |")
    for r in rows:
        print(f"| {r['images']} | {r['diffaug']} | {r['winner_diffaug']} | {r['sweep_fid']:.1f} | "
              f"{r['rescored_fid']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] | {r['trial_steps']} | {r['wall_s']} s |")


if __name__ == "__main__":
    main()
