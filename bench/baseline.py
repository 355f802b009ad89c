"""Benchmark 9 of docs/benchmarks.md (and benchmark 3 over seeds): does a sweep beat the family's
defaults at the same compute? Through the real CLI, for each seed:

- defaults: one trial of the family's default hyperparameters (a space that fixes each of them)
  trained for the whole budget;
- tpe+asha+final: `--budget B` with Optuna TPE and ASHA: 16 search trials of up to 3/4 B / 16
  steps, then the final phase trains the best configuration on for what the search left;
- random+final: the same with random search under FIFO (every search trial runs to full length).

Every run evaluates FID on the same number of samples (1000) at the same cadence; a run's result
is its best checkpoint's FID, final trials included. Benchmark 3 is read off the same runs' search
phases: the trial-steps TPE + ASHA needs to reach the best FID of random search's 16 full trials.

    python bench/baseline.py [--model dcgan] [--seeds 0 1 2] [--budget 12800]

Prints Markdown tables and writes bench/results/baseline_<model>.json (after every run, so an
interrupted bench keeps what it measured; a rerun skips the runs already there).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, run_sweep  # noqa: E402  (puts the project on sys.path)
from sweeps import best_vs_compute, compute_to_reach  # noqa: E402
from trainables.experiment import load_experiment  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TRIALS = 16
RUNS = {  # name: sweep options
    "tpe+asha+final": ["--searcher", "tpe", "--scheduler", "asha"],
    "random+final": ["--searcher", "random", "--scheduler", "fifo"],
}


def defaults_space(model: str, folder: Path) -> Path:
    """A search space that fixes every hyperparameter of the model's own space to its default (the
    first one as a choice of one value: a space must search something)."""
    from search_spaces import default_space_path
    from trainables.models import get_family
    import tomllib

    defaults = get_family(model).defaults
    keys = list(tomllib.loads(default_space_path(model).read_text()))
    path = folder / f"{model}_defaults.toml"
    first, *rest = keys
    path.write_text("".join(f"{k} = {json.dumps(defaults[k])}\n" for k in rest)
                    + f'[{first}]\ndistribution = "choice"\nvalues = [{json.dumps(defaults[first])}]\n')
    return path


def summary(exp, wall: float, budget: int) -> dict:
    best_trial, best_ckpt = exp.ranked_checkpoints()[0]
    search = best_vs_compute(exp, exp.search_trials)
    search_spent = search[-1][0] if search else 0
    finals = [t for t in exp.trials if t.final_from]
    final_spent = sum(t.last_step - (t.final_until - (budget - search_spent) // max(1, len(finals)))
                      for t in finals)
    return {"wall_seconds": wall, "best_fid": best_ckpt.metrics["fid"], "best_step": best_ckpt.metrics["step"],
            "best_is_final": bool(best_trial.final_from), "trials": len(exp.trials),
            "search_trial_steps": search_spent, "final_trial_steps": final_spent,
            "search_best_fid": search[-1][1] if search else None, "search_curve": search}


def run_seed(model: str, seed: int, budget: int, trials: int, eval_every: int, storage: Path, space: Path,
             done: dict) -> None:
    common = ["--seed", str(seed), "--eval-every", str(eval_every), "--log-every", str(eval_every // 2),
              "--keep-checkpoints", "1"]
    if f"defaults/{seed}" not in done:
        name = f"defaults_{seed}"
        wall = run_sweep(model, storage, name, "--space", str(space), "--trials", "1", "--max-steps", str(budget),
                         "--scheduler", "fifo", *common)
        done[f"defaults/{seed}"] = summary(load_experiment(storage / name), wall, budget)
        save_result(model, done)
    for run, options in RUNS.items():
        if f"{run}/{seed}" in done:
            continue
        name = f"{run.replace('+', '_')}_{seed}"
        wall = run_sweep(model, storage, name, "--budget", str(budget), "--trials", str(trials),
                         "--max-concurrent", "2", *options, *common)
        done[f"{run}/{seed}"] = summary(load_experiment(storage / name), wall, budget)
        save_result(model, done)


def save_result(model: str, done: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"baseline_{model}.json").write_text(json.dumps(done, indent=1))
    key = list(done)[-1]
    print(json.dumps({key: {k: v for k, v in done[key].items() if k != "search_curve"}}), flush=True)


def share_text(share: float) -> str:
    return "never" if share == math.inf else f"{share:.0%}"


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def print_tables(model: str, seeds: list[int], budget: int, done: dict) -> None:
    names = ["defaults", *RUNS]
    print(f"\n9. {model}, {budget} trial-steps per run, seeds {seeds}: best FID, median (range)\n")
    print("| run | " + " | ".join(f"seed {s}" for s in seeds) + " | median (range) | FID vs defaults, median "
          "(target <= 0.8x) | wall s, median |")
    print("|---|" + "---|" * len(seeds) + "---|---|---|")
    defaults = {s: done[f"defaults/{s}"]["best_fid"] for s in seeds if f"defaults/{s}" in done}
    for name in names:
        runs = {s: done[f"{name}/{s}"] for s in seeds if f"{name}/{s}" in done}
        if not runs:
            continue
        fids = [r["best_fid"] for r in runs.values()]
        ratios = [runs[s]["best_fid"] / defaults[s] for s in runs if s in defaults]
        cells = " | ".join(f"{runs[s]['best_fid']:.1f}" + (" (final)" if runs[s]["best_is_final"] else "")
                           if s in runs else "-" for s in seeds)
        print(f"| {name} | {cells} | {spread(fids)} | {spread(ratios, '{:.2f}x') if name != 'defaults' else '1x'} "
              f"| {statistics.median(r['wall_seconds'] for r in runs.values()):.0f} |")
    print("\n3. over the same seeds: trial-steps TPE + ASHA's search needs to reach random search's best "
          "FID (its trials run in full)\n")
    print("| seed | random's best FID | its trial-steps | TPE + ASHA: trial-steps to reach it | share (target <= 40%) |")
    print("|---|---|---|---|---|")
    shares = []
    for s in seeds:
        rand, tpe = done.get(f"random+final/{s}"), done.get(f"tpe+asha+final/{s}")
        if not (rand and tpe):
            continue
        target, full = rand["search_best_fid"], rand["search_trial_steps"]
        reached = compute_to_reach([tuple(c) for c in tpe["search_curve"]], target)
        shares.append(math.inf if reached is None else reached / full)
        print(f"| {s} | {target:.1f} | {full} | {reached or 'never'} | {share_text(shares[-1])} |")
    if shares:
        print(f"\nmedian share {share_text(statistics.median(shares))}, range {share_text(min(shares))}-"
              f"{share_text(max(shares))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dcgan")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=12800,
                   help="trial-steps per run (default 12800: 16 search trials of 600 steps, as benchmark 3, "
                        "and a quarter for the final phase)")
    p.add_argument("--trials", type=int, default=TRIALS, help=f"search trials per sweep (default {TRIALS})")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--fresh", action="store_true", help="forget earlier results of this model")
    args = p.parse_args()
    path = RESULTS / f"baseline_{args.model}.json"
    done = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        space = defaults_space(args.model, Path(tmp))
        for seed in args.seeds:
            run_seed(args.model, seed, args.budget, args.trials, args.eval_every, Path(tmp), space, done)
    print(f"bench wall {time.perf_counter() - start:.0f} s")
    print_tables(args.model, args.seeds, args.budget, done)


if __name__ == "__main__":
    main()
