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
    python bench/baseline.py --search-only [--variant NAME --tpe-options="--multivariate ..."]
    python bench/baseline.py --demo [--seeds 0 1 2]   # the demo's budget: --quick against the defaults
    python bench/baseline.py ... --oracle "tpe+asha+final[VARIANT]"   # and each seed's winner trained alone

--search-only runs the two searches alone (benchmark 3: no defaults run, no final phase), each
search trial as long as under --budget. --variant names a run of TPE + ASHA with --tpe-options
added (its rungs, TPE's start-up and mode); random search is the same for every variant.

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
from trainables.trials import is_untrained  # noqa: E402
from orchestrator.spec import search_trial_steps  # noqa: E402
from trainables.experiment import load_experiment  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TRIALS = 16
RUNS = {  # name: sweep options
    "tpe+asha+final": ["--searcher", "tpe", "--scheduler", "asha"],
    "random+final": ["--searcher", "random", "--scheduler", "fifo"],
}


def fixed_space(model: str, folder: Path, params: dict | None = None, name: str = "defaults") -> Path:
    """A search space that fixes every hyperparameter of the model's own space to `params`' value,
    else its default (the first one as a choice of one value: a space must search something)."""
    from search_spaces import default_space_path
    from trainables.models import get_family
    import tomllib

    values = {**get_family(model).defaults, **(params or {})}
    keys = list(tomllib.loads(default_space_path(model).read_text()))
    path = folder / f"{model}_{name}.toml"
    first, *rest = keys
    path.write_text("".join(f"{k} = {json.dumps(values[k])}\n" for k in rest)
                    + f'[{first}]\ndistribution = "choice"\nvalues = [{json.dumps(values[first])}]\n')
    return path


def summary(exp, wall: float, budget: int) -> dict:
    best_trial, best_ckpt = exp.ranked_checkpoints()[0]
    baseline = exp.spec.get("baseline") or {}
    search = best_vs_compute(exp, exp.search_trials)
    search_spent = search[-1][0] if search else 0
    final_spent = final_trial_steps(exp)
    return {"wall_seconds": wall, "best_fid": best_ckpt.metrics["fid"], "best_step": best_ckpt.metrics["step"],
            "best_is_final": bool(best_trial.final_from), "trials": len(exp.trials),
            "search_trial_steps": search_spent, "final_trial_steps": final_spent,
            "search_best_fid": search[-1][1] if search else None, "search_curve": search,
            "search_trials_run": len(exp.search_trials), "best_params": best_trial.params,
            "best_is_defaults": bool(baseline) and all(best_trial.params.get(k) == v for k, v in baseline.items()),
            "best_curve": lineage_curve(exp, best_trial)}


def lineage_curve(exp, trial) -> list[tuple[int, float]]:
    """(step, FID) at each evaluation of `trial`; for a final trial, its parent's up to the step it
    continued from, then its own: the winner's curve, to set beside the defaults' step for step."""
    def readings(t, upto=math.inf):
        return [(r["step"], r["fid"]) for r in t.results
                if "fid" in r and r["fid"] == r["fid"] and not is_untrained(r) and r["step"] <= upto]
    if not trial.final_from:
        return readings(trial)
    parent = next(t for t in exp.search_trials if t.trial_id == trial.parent)
    return readings(parent, final_start(exp, trial)) + readings(trial)


def run_key(run: str, variant: str | None, search_only: bool) -> str:
    """random search's runs are one whatever the variant; a search alone is named without '+final'."""
    name = run.replace("+final", "") if search_only else run
    return f"{name}[{variant}]" if variant and run.startswith("tpe") else name


def run_folder(key: str, seed: int) -> str:
    """The sweep folder (--name) of a result key's run for one seed: 'tpe+asha+final[even]', 0 ->
    'tpe_asha_final_even_0'."""
    return f"{key.replace('+', '_').replace('[', '_').replace(']', '')}_{seed}"


def run_seed(model: str, seed: int, budget: int, trials: int, eval_every: int, storage: Path, space: Path,
             done: dict, search_only: bool = False, variant: str | None = None, tpe_options: tuple = (),
             defaults_decay: bool = False, runs: tuple = tuple(RUNS), oracles: tuple = ()) -> None:
    common = ["--seed", str(seed), "--eval-every", str(eval_every), "--log-every", str(eval_every // 2),
              "--keep-checkpoints", "1"]
    size = (["--max-steps", str(search_trial_steps(budget, trials, eval_every))] if search_only
            else ["--budget", str(budget)])
    def train_alone(key: str, space: Path) -> None:  # one configuration trained for the whole budget
        name = run_folder(key, seed)
        wall = run_sweep(model, storage, name, "--space", str(space), "--trials", "1", "--max-steps", str(budget),
                         "--scheduler", "fifo", *common)
        done[f"{key}/{seed}"] = summary(load_experiment(storage / name), wall, budget)
        save_result(model, done)

    if not search_only and f"defaults/{seed}" not in done:
        train_alone("defaults", space)
    if defaults_decay and f"defaults+decay/{seed}" not in done:  # the same, its last quarter a cooldown
        name, cooldown = run_folder("defaults+decay", seed), budget // 4
        wall = run_sweep(model, storage, name, "--space", str(space), "--trials", "1", "--max-steps",
                         str(budget - cooldown), "--final-steps", str(cooldown), "--final-decay", "--scheduler", "fifo",
                         *common)
        done[f"defaults+decay/{seed}"] = summary(load_experiment(storage / name), wall, budget)
        save_result(model, done)
    for run, options in RUNS.items():
        if run not in runs:
            continue
        key = run_key(run, variant, search_only)
        if f"{key}/{seed}" in done:
            continue
        extra = list(tpe_options) if run.startswith("tpe") else []
        name = run_folder(key, seed)
        wall = run_sweep(model, storage, name, *size, "--trials", str(trials),
                         "--max-concurrent", "2", *options, *extra, *common)
        done[f"{key}/{seed}"] = summary(load_experiment(storage / name), wall, budget)
        save_result(model, done)
    for key in oracles:  # after the sweeps: a winner trained alone, about the most a sweep that picks it reaches
        if f"oracle[{key}]/{seed}" not in done:
            if f"{key}/{seed}" not in done:
                raise SystemExit(f"--oracle {key}: no such run for seed {seed} (give it with --runs / --variant)")
            sweep = done[f"{key}/{seed}"]
            if sweep["best_is_defaults"]:
                done[f"oracle[{key}]/{seed}"] = done[f"defaults/{seed}"]
                save_result(model, done)
            else:
                train_alone(f"oracle[{key}]", fixed_space(model, storage, sweep["best_params"], f"oracle_{seed}"))


def final_start(exp, final) -> int:
    """The step a final trial continued from: that of its parent's checkpoint."""
    parent = next(t for t in exp.search_trials if t.trial_id == final.parent)
    return next(c.step for c in parent.checkpoints if c.path.name == Path(final.final_from).name)


def final_trial_steps(exp) -> int:
    """The trial-steps of a sweep's final phase: each final trial's steps past the checkpoint it
    continued from."""
    return sum(t.last_step - final_start(exp, t) for t in exp.trials if t.final_from)


def trial_steps(exp) -> int:
    """The trial-steps a sweep trained: each search trial's last step, and its final phase's."""
    return sum(t.last_step for t in exp.search_trials) + final_trial_steps(exp)


def demo_keys(variant: str | None) -> tuple[str, str]:
    """The result keys (before /SEED) of a --demo run and of the defaults trained alone beside it."""
    return (f"quick[{variant}]", f"quick-defaults[{variant}]") if variant else ("quick", "quick-defaults")


def run_demo_seed(model: str, seed: int, storage: Path, space: Path, done: dict, variant: str | None = None,
                  options: tuple = ()) -> None:
    """The demo's budget: `MODEL --quick` (what `make demo` runs; with --variant, its --tpe-options
    added), then the family's defaults alone for the trial-steps it trained, at --quick's evaluation
    cadence and sample count."""
    from orchestrator.options import QUICK

    quick, defaults = demo_keys(variant)
    if f"{quick}/{seed}" not in done:
        name = run_folder(quick, seed)
        wall = run_sweep(model, storage, name, "--quick", "--seed", str(seed), *options)
        exp = load_experiment(storage / name)
        trained = trial_steps(exp)
        done[f"{quick}/{seed}"] = {**summary(exp, wall, trained), "trained_trial_steps": trained}
        save_result(model, done)
    if f"{defaults}/{seed}" not in done:
        steps = done[f"{quick}/{seed}"]["trained_trial_steps"]
        same = [v for k, v in done.items() if k.startswith("quick-defaults") and k.endswith(f"/{seed}")
                and abs(v["search_trial_steps"] - steps) <= QUICK["log_every"]]  # as many steps, to a report: run
        if same:
            done[f"{defaults}/{seed}"] = same[0]
        else:
            name = run_folder(defaults, seed)
            wall = run_sweep(model, storage, name, "--space", str(space), "--trials", "1", "--max-steps", str(steps),
                             "--eval-every", str(QUICK["eval_every"]), "--log-every", str(QUICK["log_every"]),
                             "--scheduler", "fifo", "--seed", str(seed), "--keep-checkpoints", "1")
            done[f"{defaults}/{seed}"] = summary(load_experiment(storage / name), wall, steps)
        save_result(model, done)


def print_demo(model: str, seeds: list[int], done: dict, variant: str | None = None) -> None:
    quick, defaults = demo_keys(variant)
    print(f"\n9. {model} {quick} against its defaults trained alone for the same trial-steps (target <= 0.9x)\n")
    print("| seed | --quick: best FID | its trial-steps | defaults alone: best FID | ratio |")
    print("|---|---|---|---|---|")
    ratios = []
    for s in seeds:
        sweep, alone = done.get(f"{quick}/{s}"), done.get(f"{defaults}/{s}")
        if sweep and alone:
            ratios.append(sweep["best_fid"] / alone["best_fid"])
            print(f"| {s} | {sweep['best_fid']:.1f} | {sweep['trained_trial_steps']} | {alone['best_fid']:.1f} "
                  f"| {ratios[-1]:.2f}x |")
    if ratios:
        print(f"\nmedian {statistics.median(ratios):.2f}x ({min(ratios):.2f}x-{max(ratios):.2f}x)")


def save_result(model: str, done: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"baseline_{model}.json").write_text(json.dumps(done, indent=1))
    key = list(done)[-1]
    print(json.dumps({key: {k: v for k, v in done[key].items() if k != "search_curve"}}), flush=True)


def share_text(share: float) -> str:
    return "never" if share == math.inf else f"{share:.0%}"


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def print_tables(model: str, seeds: list[int], budget: int, done: dict, search_only: bool = False,
                 variant: str | None = None) -> None:
    if not search_only:
        print_row9(model, seeds, budget, done)
    random, tpe = run_key("random+final", variant, search_only), run_key("tpe+asha+final", variant, search_only)
    print_row3(seeds, done, random, tpe)


def print_row9(model: str, seeds: list[int], budget: int, done: dict) -> None:
    variants = sorted({key.split("/")[0] for key in done if key.startswith("tpe+asha+final[")})
    oracles = sorted({key.split("/")[0] for key in done if key.startswith("oracle[")})
    names = ["defaults", "defaults+decay", *RUNS, *variants, *oracles]
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


def running_best(curve: list, step: int) -> float | None:
    """The best FID a (step, FID) curve read by `step`; None before its first reading."""
    fids = [fid for at, fid in curve if at <= step and fid < math.inf]
    return min(fids) if fids else None


def print_curves(model: str, seeds: list[int], budget: int, done: dict, runs: list[str]) -> None:
    """Each run's best FID so far at eighths of the budget, by the steps its best model trained
    (the winner's from its first step, through the search into the final phase): where the winner
    runs ahead of the defaults step for step, and how many steps it had."""
    marks = [budget * i // 8 for i in range(1, 9)]
    print(f"\n9. {model}: best FID so far by the best model's own step (its curve), at eighths of {budget}\n")
    print("| seed | run | " + " | ".join(str(m) for m in marks) + " |")
    print("|---|---|" + "---|" * len(marks))
    for seed in seeds:
        for run in runs:
            result = done.get(f"{run}/{seed}")
            curve = result and (result.get("best_curve") or (result["search_curve"] if result["trials"] == 1 else None))
            if not curve:
                continue
            last = max(at for at, _ in curve)
            cells = [running_best(curve, m) if m <= last + budget // 16 else None for m in marks]
            print(f"| {seed} | {run} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells) + " |")


def print_row3(seeds: list[int], done: dict, random: str, tpe: str) -> None:
    print(f"\n3. {tpe} against {random}, over the same seeds: trial-steps TPE + ASHA's search needs to reach "
          "random search's best FID (its trials run in full)\n")
    print("| seed | random's best FID | its trial-steps | TPE + ASHA: trial-steps to reach it | share (target <= 40%) |")
    print("|---|---|---|---|---|")
    shares = []
    for s in seeds:
        rand, guided = done.get(f"{random}/{s}"), done.get(f"{tpe}/{s}")
        if not (rand and guided):
            continue
        target, full = rand["search_best_fid"], rand["search_trial_steps"]
        reached = compute_to_reach([tuple(c) for c in guided["search_curve"]], target)
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
    p.add_argument("--search-only", action="store_true", help="benchmark 3 alone: the two searches, no final phase")
    p.add_argument("--defaults-decay", action="store_true",
                   help="also train the defaults with their last quarter a cooldown (--final-decay)")
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="the sweeps to run (default both)")
    p.add_argument("--demo", action="store_true",
                   help="the demo's budget instead: MODEL --quick against the defaults for the trial-steps it trained")
    p.add_argument("--variant", help="a name for the TPE + ASHA run made with --tpe-options")
    p.add_argument("--tpe-options", default="", help="sweep options added to TPE + ASHA's run (with --variant)")
    p.add_argument("--oracle", nargs="+", default=[], metavar="RUN",
                   help="also train the winning configuration of each RUN (a result key before /SEED, e.g. "
                        "'tpe+asha+final[even]') alone for the whole budget, as the defaults: about the most a sweep "
                        "that picks that winner can reach at equal trial-steps, since a sweep pays for its search")
    args = p.parse_args()
    if bool(args.variant) != bool(args.tpe_options):
        p.error("--variant and --tpe-options go together")
    path = RESULTS / f"baseline_{args.model}.json"
    done = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        space = fixed_space(args.model, Path(tmp))
        for seed in args.seeds:
            if args.demo:
                run_demo_seed(args.model, seed, Path(tmp), space, done, args.variant, tuple(args.tpe_options.split()))
                continue
            run_seed(args.model, seed, args.budget, args.trials, args.eval_every, Path(tmp), space, done,
                     args.search_only, args.variant, tuple(args.tpe_options.split()), args.defaults_decay,
                     tuple(args.runs), tuple(args.oracle))
    print(f"bench wall {time.perf_counter() - start:.0f} s")
    if args.demo:
        return print_demo(args.model, args.seeds, done, args.variant)
    print_tables(args.model, args.seeds, args.budget, done, args.search_only, args.variant)
    if args.oracle:
        print_curves(args.model, args.seeds, args.budget, done,
                     ["defaults", *(run for key in args.oracle for run in (key, f"oracle[{key}]"))])


if __name__ == "__main__":
    main()
