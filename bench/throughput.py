"""Benchmarks 1, 2 and 4 of docs/benchmarks.md, side by side in one run, per model family:

1. images/s of the training step inside the sweep (a Tune trial running the shared loop, one
   worker, one CPU thread) against the same family, hyperparameters and batch in a plain loop in
   this process (one CPU thread);
2. where a trial's wall time goes: training steps, evaluations, and the rest (start-up of the
   Tune trial, reporting, checkpointing, teardown); for `--compare` families also under a
   TorchTrainer (`--torch-trainer`: its controller, worker group and process group);
4. one evaluation (FID/KID and the family's own scores) against one training step, and the size of
   the feature network.

Each family's trial is a one-trial sweep of `--steps` steps (default 600, an evaluation and a
checkpoint every 150 as in `--quick`; cyclegan and ddpm `--slow-steps`, default 150), run by the
real CLI on a local Ray; the plain loop then
reruns the trial's own hyperparameters. Prints a Markdown table and writes bench/results/throughput.json.

    python bench/throughput.py [FAMILY ...] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import ROOT, run_sweep  # noqa: E402  (puts the project on sys.path)
from trainables.experiment import load_experiment  # noqa: E402
from trainables.datasets import load_dataset  # noqa: E402
from trainables.models import all_families, get_family  # noqa: E402
from trainables.features import Evaluator, feature_network  # noqa: E402
from trainables.loop import EVAL_SEED, index_batches, next_batch  # noqa: E402

EVAL_EVERY, LOG_EVERY = 150, 25
SLOW = ("cyclegan", "ddpm")  # 20-50x slower steps: --slow-steps of them measure as well


def sweep_one_trial(model: str, steps: int, storage: Path, *options: str) -> tuple[dict, float]:
    """One real trial through `python -m orchestrator.sweep`; returns its facts and the command's wall time."""
    name = model + "".join(options).replace("-", "_")
    wall = run_sweep(model, storage, name, "--trials", "1", "--max-steps", str(steps), "--eval-every", str(EVAL_EVERY),
                     "--log-every", str(LOG_EVERY), "--scheduler", "fifo", *options)
    (trial,) = load_experiment(storage / name).trials
    return trial, wall


def trial_breakdown(trial, batch: int, steps: int) -> dict:
    """Training, evaluation and other seconds of a trial, from its own reports. Training time is
    the steps at the median steady rate (the first intervals include warm-up, and the first one
    also the step-0 evaluation); "other" is the rest: start-up, reporting, checkpoints, teardown."""
    reports = trial.results
    total = reports[-1]["time_total_s"]
    evals = [r["eval_seconds"] for r in reports if r.get("eval_seconds") == r.get("eval_seconds")
             and r.get("eval_seconds") is not None]
    rate = statistics.median(r["images_per_s"] for r in reports if r["step"] > 2 * LOG_EVERY)
    training = steps * batch / rate
    return {"trial_seconds": total, "train_seconds": training, "eval_seconds": sum(evals),
            "other_seconds": total - training - sum(evals), "ray_images_per_s": rate,
            "one_eval_seconds": statistics.median(evals[1:])}  # evals[0], at step 0, also embeds the real images


def plain_loop(model: str, hp: dict, steps: int, warmup: int) -> dict:
    """The same family and hyperparameters in a plain loop (as the worker loop does it, minus Ray)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    family = get_family(model)
    hp = {**family.defaults, **hp}
    data = family.prepare_data(load_dataset(family.default_dataset), hp)
    modules = family.build(hp, data.info())
    optimizers = family.optimizers(modules, hp)
    batches = index_batches(len(data.train_x), hp["batch_size"], 0, 1, 0, 0)
    batches_a = index_batches(len(data.train_a), hp["batch_size"], 0, 1, 0, 0, stream=1) if family.data_kind == "unpaired" else None

    def step() -> None:
        family.train_step(modules, optimizers, next_batch(data, family, batches, batches_a, torch.device("cpu")), hp)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    rate = steps * hp["batch_size"] / (time.perf_counter() - start)

    state, meta = feature_network("classifier", data, log=lambda _: None)
    evaluator = Evaluator(data, 1000, state, meta, torch.device("cpu"))
    for m in modules.values():
        m.eval()
    family.evaluate(modules, hp, evaluator, EVAL_SEED)  # the first one also embeds the real images
    start = time.perf_counter()
    family.evaluate(modules, hp, evaluator, EVAL_SEED)
    one_eval = time.perf_counter() - start
    params = sum(p.numel() for p in evaluator.classifier.parameters()) if evaluator.classifier is not None else 0
    return {"plain_images_per_s": rate, "plain_one_eval_seconds": one_eval, "feature_params": params}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("families", nargs="*", help="default: all")
    p.add_argument("--steps", type=int, default=600, help="steps of each family's trial (default 600, as --quick)")
    p.add_argument("--slow-steps", type=int, default=150, help=f"steps of {' and '.join(SLOW)} (default 150)")
    p.add_argument("--compare", nargs="*", default=["vae", "dcgan"],
                   help="families also run under a TorchTrainer (--torch-trainer), for the start-up it costs "
                        "(default: vae dcgan)")
    args = p.parse_args()
    families = args.families or list(all_families())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in families:
            steps = args.slow_steps if model in SLOW else args.steps
            trial, wall = sweep_one_trial(model, steps, Path(tmp))
            hp = {**get_family(model).defaults, **trial.params}
            row = {"family": model, "batch_size": hp["batch_size"], "steps": steps, "sweep_wall_seconds": wall,
                   **trial_breakdown(trial, hp["batch_size"], steps),
                   **plain_loop(model, trial.params, steps=max(50, steps // 3), warmup=LOG_EVERY)}
            row["ray_vs_plain"] = row["ray_images_per_s"] / row["plain_images_per_s"]
            row["overhead_share"] = row["other_seconds"] / row["trial_seconds"]
            row["eval_vs_step"] = row["one_eval_seconds"] / (row["batch_size"] / row["ray_images_per_s"])
            rows.append(row)
            print(json.dumps(row), flush=True)
        compared = []
        for model in args.compare:
            trial, wall = sweep_one_trial(model, args.steps, Path(tmp), "--torch-trainer")
            batch = {**get_family(model).defaults, **trial.params}["batch_size"]
            row = {"family": model, "sweep_wall_seconds": wall, **trial_breakdown(trial, batch, args.steps)}
            in_process = next((r for r in rows if r["family"] == model), None)
            if in_process:
                row["in_process_trial_seconds"] = in_process["trial_seconds"]
                row["in_process_other_seconds"] = in_process["other_seconds"]
            compared.append(row)
            print(json.dumps({"torch_trainer": row}), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d %H:%M"), "steps": args.steps}
    (out / "throughput.json").write_text(json.dumps({"machine": machine, "rows": rows, "torch_trainer": compared},
                                                    indent=1))
    print("\n| family | batch | steps | img/s in Ray | img/s plain | ratio (>= 0.95) | trial s | train / eval / other s "
          "| other share (<= 10%) | one eval s | eval / step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['family']}` | {r['batch_size']} | {r['steps']} | {r['ray_images_per_s']:.0f} | {r['plain_images_per_s']:.0f} "
              f"| {r['ray_vs_plain']:.2f} | {r['trial_seconds']:.1f} | {r['train_seconds']:.1f} / "
              f"{r['eval_seconds']:.1f} / {r['other_seconds']:.1f} | {r['overhead_share']:.0%} "
              f"| {r['one_eval_seconds']:.2f} | {r['eval_vs_step']:.0f}x |")
    if compared:
        print("\n| family | trial s: in-process / TorchTrainer | other s: in-process / TorchTrainer |")
        print("|---|---|---|")
        for r in compared:
            print(f"| `{r['family']}` | {r.get('in_process_trial_seconds', math.nan):.1f} / {r['trial_seconds']:.1f} "
                  f"| {r.get('in_process_other_seconds', math.nan):.1f} / {r['other_seconds']:.1f} |")


if __name__ == "__main__":
    main()
