"""python -m orchestrator.sweep MODEL [options]: a Ray Tune + Optuna sweep of one model family.

Each trial trains one set of hyperparameters with the shared loop (trainables/loop.py): in its
Tune trial's own process, or, with several workers (DDP) or --torch-trainer, under a Ray Train
TorchTrainer (trainables/ray_trial.py). The Optuna TPE searcher picks hyperparameters, ASHA stops poor trials early (or Population Based Training, without Optuna,
moves poor trials onto better ones' checkpoints with mutated learning rates), and each trial
keeps its best checkpoints by the family's objective. At the end the sweep prints a leaderboard
and writes dashboard.html.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.cluster import check_address, init_ray
from trainables.cli import (Parser, UsageError, feature_space, fraction, image_size, non_negative_float, non_negative_int,
                            positive_int, run)
from trainables.experiment import (is_spec, keep_results_before_resume, leaderboard, load_experiment, write_histories,
                                   write_sweep_status)
from trainables.layout import (CHECKPOINTS_DIR, DASHBOARD_FILE, ERROR_FILE, FINAL_DIR, FINAL_FROM, FINAL_UNTIL,
                               SPEC_FILE, STORAGE_FULL)
from trainables.settings import FEATURE_KINDS, CheckpointConfig, LoopSettings, Resources, SweepSpec, TrialSettings
from trainables.storage import Location, check_reachable, first_line, full_cause, location

QUICK = {"trials": 8, "max_steps": 600, "eval_every": 150, "log_every": 25, "eval_samples": 1000, "final_steps": 600}
# The Tune function that fits a trial's TorchTrainer mostly waits; it asks for a sliver of CPU
# (Tune refuses 0). So that N one-CPU trials fit N cores, a local Ray gets one extra logical CPU.
TRIAL_DRIVER_CPU = 0.01
# A finished trial's process (imports of torch and Ray done, ~3 s here) runs the next trial
# (Tune's reuse_actors; the loop keeps no state between trials).
REUSE_TRIAL_PROCESSES = True


def startup_trials(spec: SweepSpec) -> int:
    """TPE's random start: --startup-trials, else a third of the trials, 2..10."""
    return spec.startup_trials if spec.startup_trials is not None else max(2, min(10, spec.trials // 3))


def tpe_sampler(spec: SweepSpec):
    """Optuna's Tree-structured Parzen Estimator: --startup-trials random trials, then each draw from
    a model of the finished ones. Optuna (>= 5) models the hyperparameters jointly (multivariate)
    for one objective and one by one for a Pareto search, unless --[no-]multivariate says; trials
    running at once count as bad (constant_liar), so they don't draw the same point."""
    import optuna

    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup_trials(spec),
                                      multivariate=spec.multivariate, constant_liar=True)


def multivariate(spec: SweepSpec) -> bool:
    """Whether TPE models the hyperparameters jointly: --[no-]multivariate, else Optuna's default."""
    return spec.multivariate if spec.multivariate is not None else not spec.objectives


def grace_period(spec: SweepSpec) -> int:
    """ASHA's first rung: --grace-period, else a quarter of --max-steps rounded down to a multiple of
    --eval-every (at least one). The rungs then fall on evaluations, so each ranks trials on a
    reading taken there, not on one up to --eval-every steps old (docs/benchmarks.md, row 3)."""
    if spec.grace_period:
        return spec.grace_period
    return max(spec.eval_every, spec.max_steps // 4 // spec.eval_every * spec.eval_every)


def search_description(spec: SweepSpec) -> str:
    """The scheduler and sampler in words, with ASHA's rungs and TPE's start-up and mode."""
    text = f"scheduler {spec.scheduler}"
    if spec.scheduler == "asha":
        rungs, rung = [], grace_period(spec)
        while rung < spec.max_steps:
            rungs.append(str(rung))
            rung *= spec.reduction_factor
        text += f" (rungs at step {', '.join(rungs)}: the top 1/{spec.reduction_factor} go on)" if rungs else ""
    if spec.scheduler == "pbt":
        return text
    text += f", Optuna sampler {spec.searcher}"
    if spec.searcher == "tpe":
        mode = "multivariate" if multivariate(spec) else "one hyperparameter at a time"
        text += f" ({startup_trials(spec)} random trials first, {mode})"
    return text


def asha_scheduler(spec: SweepSpec):
    """ASHA with rungs at grace_period * reduction_factor**k below --max-steps; at each rung a trial
    goes on only if it is in the top 1/reduction_factor of the trials that reached it."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="step", max_t=spec.max_steps, reduction_factor=spec.reduction_factor,
                         grace_period=grace_period(spec))


def random_sampler(spec: SweepSpec):
    import optuna

    return optuna.samplers.RandomSampler(seed=spec.seed)


SAMPLERS = {"tpe": tpe_sampler, "random": random_sampler}  # by --searcher
DATA_OPTIONS = ("image_size", "fit", "classes", "attribute", "folders", "swap_domains", "heldout_fraction")  # to the loader
STORAGE_ENV, DEFAULT_STORAGE = "ORCHESTRATOR_STORAGE", "experiments"  # where --storage defaults to
DEFAULTS = {"trials": 16, "max_steps": 2000, "eval_every": 250, "log_every": 50, "eval_samples": 2000,
            "final_steps": 0}
RESCORE_TOP = 5  # checkpoints the sweep re-scores at its end (orchestrator.rescore)
QUICK_RESCORE_TOP = 1  # under --quick: the trained winner only (~15 s for a demo DCGAN on 2 cores), so the demo stays under 3 min
# How a sweep runs, beside what it searches: saved in sweep.json (`run_options`) and reused by
# --resume unless given again; each with its default (rescore_top's: RESCORE_TOP, or QUICK_RESCORE_TOP)
RUN_OPTIONS = {"rescore_top": RESCORE_TOP, "no_dashboard": False, "dashboard_every": 30.0, "mlflow": None,
               "max_concurrent": None, "max_failures": 1}
SEARCH_SHARE = 0.75  # of --budget: the search's; the final phase gets what the search left


def build_parser() -> Parser:
    p = Parser(prog="python -m orchestrator.sweep", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="model family to sweep (see --list)")
    p.add_argument("--list", action="store_true", help="list the model families: default dataset, objective, search space")
    budget = p.add_argument_group("budget")
    budget.add_argument("--quick", action="store_true",
                        help=f"the demo's small budget: {QUICK['trials']} trials of {QUICK['max_steps']} steps, then "
                             f"the best one trained {QUICK['final_steps']} steps more (explicit options below still win)")
    budget.add_argument("--trials", type=positive_int, help=f"number of trials (default {DEFAULTS['trials']})")
    budget.add_argument("--max-steps", type=positive_int,
                        help=f"training steps per trial, the most ASHA lets a trial run (default {DEFAULTS['max_steps']})")
    budget.add_argument("--eval-every", type=positive_int,
                        help=f"steps between evaluations (FID/KID) and checkpoints (default {DEFAULTS['eval_every']})")
    budget.add_argument("--log-every", type=positive_int,
                        help=f"steps between loss reports to Tune (default {DEFAULTS['log_every']})")
    budget.add_argument("--eval-samples", type=positive_int,
                        help=f"generated and held-out real images per FID/KID evaluation (default {DEFAULTS['eval_samples']}; "
                             f"capped by the test split)")
    budget.add_argument("--final-steps", type=positive_int,
                        help="the final phase: once the search is done, the top --final-top configurations continue "
                             "from their best checkpoints for N more steps, as trials of their own (default: none; "
                             f"{QUICK['final_steps']} with --quick)")
    budget.add_argument("--final-top", type=positive_int, default=1,
                        help="configurations the final phase trains on (default 1)")
    budget.add_argument("--final-decay", action=argparse.BooleanOptionalAction, default=None,
                        help="the final phase's learning rates fall linearly to 0 over its steps (a cooldown, as in "
                             "warmup-stable-decay schedules) rather than staying at the searched values (default off)")
    budget.add_argument("--budget", type=positive_int, metavar="TRIAL_STEPS",
                        help=f"total training steps of all trials, search and final phase: each search trial gets "
                             f"{SEARCH_SHARE:.0%}% of it / --trials as --max-steps (a multiple of --eval-every), the "
                             f"final phase what the search left (ASHA stops trials early), shared by --final-top")
    data = p.add_argument_group("data")
    from trainables.datasets import DATASETS

    data.add_argument("--dataset", help="dataset name (default: the model's own; see --list): "
                                        + ", ".join(sorted(DATASETS)))
    data.add_argument("--data-root", help="folder holding the dataset's files (default: system folders, then download; "
                                          "required by celeba*, *_folders and image_folder)")
    data.add_argument("--subset", type=positive_int, help="use only the first N training images")
    # loader options, saved in sweep.json (so --resume reloads the same data); a dataset that
    # doesn't take one says so
    data.add_argument("--image-size", type=image_size, metavar="N|HxW",
                      help="size of the images that celeba, celeba_split and the folder datasets make: N for N x N "
                           "(default 64) or HxW, e.g. 64x128 (64 high, 128 wide)")
    data.add_argument("--fit", choices=["crop", "pad", "stretch"],
                      help="how celeba and folder images take that size: center crop to its aspect ratio (default), "
                           "pad with the border colour (signatures), or stretch")
    data.add_argument("--heldout-fraction", type=fraction, metavar="F",
                      help="folder datasets without test/ (or val/) folders: the share of images held out for "
                           "evaluation, chosen by a fixed seed (default 0.1)")
    data.add_argument("--classes", help="comma-separated classes to keep: CIFAR-10 names for cifar10 (e.g. cat,dog; "
                                        "cifar10_cats_dogs' default), or attribute names for celeba's labels")
    data.add_argument("--attribute", help="celeba_split's attribute: domain A without it, B with it (default Eyeglasses)")
    data.add_argument("--folders", help="paired_folders: the two sub-folders with matching file names, as A,B "
                                        "(e.g. sketches,photos; default: found by their matching names)")
    data.add_argument("--swap-domains", action="store_true", default=None,
                      help="two-domain data: translate B -> A instead of A -> B (e.g. trainB -> trainA, photos -> sketches)")
    search = p.add_argument_group("search")
    search.add_argument("--space", help="search-space TOML file (default: search_spaces/MODEL.toml)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="fix a hyperparameter for every trial, e.g. --set normal_class=3 (repeatable; "
                             "overrides the search space)")
    search.add_argument("--scheduler", choices=["asha", "fifo", "pbt"], default="asha",
                        help="asha: stop poor trials early (default); fifo: run every trial to --max-steps; "
                             "pbt: Population Based Training of the --trials as one population: every --eval-every "
                             "steps the worst quarter continue from the best quarter's checkpoints with mutated "
                             "learning rates (the searched ones of the family's `mutable`); Optuna is not used")
    search.add_argument("--searcher", choices=list(SAMPLERS), default="tpe",
                        help="how Optuna picks each trial's hyperparameters: tpe (default: Tree-structured Parzen "
                             "Estimator, learns from finished trials) or random (plain random search, the baseline "
                             "bench/sweeps.py compares it with); ignored by pbt")
    search.add_argument("--grace-period", type=positive_int, metavar="STEPS",
                        help="ASHA's first rung: no trial stops before STEPS (default a quarter of --max-steps, "
                             "rounded down to a multiple of --eval-every, at least one)")
    search.add_argument("--reduction-factor", type=positive_int, metavar="N",
                        help="ASHA: at each rung (grace period x N^k steps) a trial goes on only if it is in the "
                             "top 1/N of the trials that reached it (default 2)")
    search.add_argument("--startup-trials", type=non_negative_int, metavar="N",
                        help="tpe: trials drawn at random before TPE models the finished ones (default a third of "
                             "--trials, 2..10; the defaults trial counts)")
    search.add_argument("--multivariate", action=argparse.BooleanOptionalAction, default=None,
                        help="tpe: model the hyperparameters jointly (multivariate TPE) or, with --no-multivariate, "
                             "one by one (default: jointly; one by one in a Pareto search, as Optuna does)")
    search.add_argument("--fid-features", type=feature_space, default="auto", metavar="|".join(FEATURE_KINDS) + "|FILE",
                        help="feature network of FID/KID, trained once on the dataset and cached: "
                             + "; ".join(f"{k}: {v}" for k, v in FEATURE_KINDS.items())
                             + "; FILE.safetensors: your own torchvision inception_v3, resnet50 or resnet18 weights "
                               "(its pooled features, comparable with published numbers for Inception-v3). "
                               "Checked before Ray starts (docs/results.md: the disturbance tests), but for "
                               "Inception and FILE")
    search.add_argument("--skip-feature-check", action="store_true",
                        help="sweep without checking that the feature space tells noise and blur from real images "
                             "(a check of seconds; with `auto`, a space that fails gives way to the next)")
    search.add_argument("--objectives", metavar="OBJECTIVE,COST",
                        help="a Pareto search of two objectives with Optuna's multi-objective TPE (or random) "
                             "sampler: the family's objective against what its model costs, params (parameters of "
                             "the network inference runs) or sample_ms (ms of inference per image), e.g. "
                             "fid,sample_ms; every trial runs to --max-steps (fifo: ASHA and PBT rank on one "
                             "objective) and there is no final phase; the dashboard draws the front and "
                             "`orchestrator.best --pareto` exports it")
    search.add_argument("--warm-start", nargs="+", metavar="EXP",
                        help="seed the new sweep's Optuna study with the scored trials of earlier sweeps of the same "
                             "family (folders or URIs), so TPE starts from what they learned; the space may differ "
                             "(trials outside it are dropped, and said); the seeded trials don't count in --trials")
    search.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler and of training (default 0)")
    where = p.add_argument_group("where results go")
    where.add_argument("--storage",
                       help=f"where experiments go: a local path, an NFS path every node mounts, or a URI such as "
                            f"s3://bucket/path (default ${STORAGE_ENV}, which cluster.yaml sets on a cluster, else "
                            f"./{DEFAULT_STORAGE})")
    where.add_argument("--name", help="experiment name (default MODEL-DATASET-TIMESTAMP); results go to STORAGE/NAME")
    where.add_argument("--resume", action="store_true",
                       help="continue the experiment STORAGE/NAME: finished trials are kept, unfinished ones "
                            "resume from their checkpoints")
    where.add_argument("--keep-checkpoints", type=positive_int, default=3,
                       help="checkpoints kept per trial: the best K by the objective, plus the latest "
                            "(a restarted trial goes on from it) (default 3)")
    cluster = p.add_argument_group("cluster and resources")
    cluster.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: $RAY_ADDRESS, "
                                           "else start a local Ray on this machine)")
    cluster.add_argument("--workers-per-trial", type=positive_int,
                         help="Ray Train workers (DDP processes) per trial (default 1). Two or more run under a "
                              "TorchTrainer; one trains in the Tune trial's own process, which starts ~9 s faster")
    cluster.add_argument("--torch-trainer", action="store_true", default=None,
                         help="run one-worker trials under a TorchTrainer too (Ray Train's worker restarts "
                              "and placement, at the cost of its start-up)")
    cluster.add_argument("--cpus-per-worker", type=non_negative_float,
                         help="CPUs per training worker; also its torch threads (default 1)")
    cluster.add_argument("--gpus-per-worker", type=non_negative_float,
                         help="GPUs per training worker, fractions allowed (default 0: CPU training)")
    cluster.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                         help="the training step's precision: fp32 (default), bf16 or fp16 (autocast; fp16 with a "
                              "GradScaler); evaluations run in fp32. bf16 is the fast choice on recent GPUs")
    cluster.add_argument("--channels-last", action="store_true",
                         help="keep conv weights and image batches in NHWC layout (faster convolutions on GPUs)")
    cluster.add_argument("--max-concurrent", type=positive_int,
                         help="trials running at once (default: as many as the cluster's CPUs/GPUs fit)")
    cluster.add_argument("--max-failures", type=int,
                         help="times a trial restarts from its last checkpoint after a training worker, or the "
                              "node running the trial, dies (default 1)")
    p.add_argument("--no-dashboard", action="store_true", default=None,
                   help="don't write dashboard.html (live or at the end)")
    p.add_argument("--dashboard-every", type=non_negative_float, metavar="S",
                   help="while the sweep runs, rebuild dashboard.html at most every S seconds and as trials end "
                        "(the open page reloads itself); 0: only at the end (default 30)")
    p.add_argument("--mlflow", metavar="URI",
                   help="log each trial as an MLflow run (parameters, metrics by step, sample grids, trial id and "
                        "status) in an MLflow experiment named after the sweep, e.g. http://127.0.0.1:5000 "
                        "(needs pip install 'gen-orchestrator[mlflow]')")
    p.add_argument("--rescore-top", type=non_negative_int, metavar="K",
                   help=f"once the sweep is done, re-score its K best checkpoints over several sample seeds on every "
                        f"held-out image, as orchestrator.rescore does; best and the dashboard then rank by that "
                        f"(default {RESCORE_TOP}, {QUICK_RESCORE_TOP} with --quick; 0: skip)")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray Tune's trial status tables (default: one line as each trial ends)")
    return p


def fit_budget(spec: dict) -> list[str]:
    """A trial of fewer steps than the evaluation or report interval (a first smoke test such as
    `--max-steps 40`) evaluates and reports at its last step: the intervals are clamped to
    --max-steps (ASHA's grace period then fits too). Returns a note per change."""
    notes = []
    for key in ("eval_every", "log_every"):
        if spec[key] > spec["max_steps"]:
            notes.append(f"--{key.replace('_', '-')} {spec[key]} is more than --max-steps {spec['max_steps']}: "
                         f"using {spec['max_steps']}")
            spec[key] = spec["max_steps"]
    return notes


def run_options(args: argparse.Namespace, spec: SweepSpec, log) -> None:
    """The options of how a sweep runs (RUN_OPTIONS; what it searches is the rest of the spec): a
    new sweep's from the command line or their defaults, saved in sweep.json; a resumed one's from
    there unless given again for this run (the first lines say which were reused; sweep.json is
    written once, as for resources, but by an extension). Sets them on `args`."""
    defaults = {**RUN_OPTIONS, "rescore_top": QUICK_RESCORE_TOP if args.quick else RESCORE_TOP}
    given = {k: getattr(args, k) for k in RUN_OPTIONS if getattr(args, k) is not None}
    saved = {k: v for k, v in spec.run_options.items() if k in RUN_OPTIONS} if args.resume else {}
    reused = {k: v for k, v in saved.items() if k not in given}
    chosen = {**defaults, **reused, **given}
    for key, value in chosen.items():
        setattr(args, key, value)
    shown = [option_text(k, v) for k, v in reused.items() if v != defaults[k]]
    if shown:
        log(f"resuming with the options it was run with ({SPEC_FILE}): {' '.join(shown)}")
    # an MLflow URI with a user or password in it is used, never written down
    spec.run_options = {**chosen, "mlflow": None if urlsplit(str(chosen["mlflow"])).password else chosen["mlflow"]}


def option_text(key: str, value) -> str:
    """A run option as the command line writes it."""
    flag = f"--{key.replace('_', '-')}"
    return flag if value is True else f"{flag} {value}"


def trial_resources(args: argparse.Namespace, spec: SweepSpec) -> Resources:
    """A new sweep's resources per trial come from the command line; a resumed one's from its
    sweep.json, where options given again win (said in one line)."""
    given = {f.name: getattr(args, f.name) for f in fields(Resources) if getattr(args, f.name) is not None}
    saved = Resources.from_json(spec.resources or {}) if args.resume else Resources()
    changed = [f"--{k.replace('_', '-')} {getattr(saved, k)} -> {v}" for k, v in given.items() if getattr(saved, k) != v]
    if args.resume and changed:
        print(f"[sweep] resuming with resources changed from its {SPEC_FILE}: {', '.join(changed)}", flush=True)
    return replace(saved, **given)


def list_models() -> None:
    from search_spaces import default_space_path, describe, load_space
    from trainables.models import all_families

    for name, family in all_families().items():
        space = describe(load_space(default_space_path(name), set(family.defaults)))
        print(f"{name}: {family.description}")
        print(f"  default dataset: {family.default_dataset}; objective: {family.objective} ({family.mode}); "
              f"inference: {', '.join(family.inference_modes)}")
        for key, text in space.items():
            print(f"  {key}: {text}")


def split_budget(args: argparse.Namespace, sizes: dict) -> dict:
    """--budget B: each of the search's trials may train SEARCH_SHARE * B / trials steps (rounded
    down to a multiple of --eval-every where it is one or more); the final phase gets the rest, worked
    out once the search has spent what it did (final_tuner)."""
    if args.max_steps or args.final_steps:
        raise UsageError("--budget divides the steps itself: give --budget or --max-steps / --final-steps, not both")
    share = 1.0 if args.scheduler == "pbt" or args.objectives else SEARCH_SHARE  # no final phase there
    per_trial = search_trial_steps(args.budget, sizes["trials"], sizes["eval_every"], share)
    if per_trial < 1:
        raise UsageError(f"--budget {args.budget} is less than one step for each of {sizes['trials']} trials")
    return {"max_steps": per_trial, "final_steps": 0}


def search_trial_steps(budget: int, trials: int, eval_every: int, share: float = SEARCH_SHARE) -> int:
    """A search trial's steps under --budget: share * budget / trials, rounded down to a multiple of
    --eval-every where it is one or more."""
    per_trial = int(budget * share) // trials
    return per_trial // eval_every * eval_every if per_trial >= eval_every else per_trial


def objective_names(text: str) -> list[str]:
    """--objectives' comma-separated names."""
    return [name.strip() for name in text.split(",")]


def pareto_objectives(args: argparse.Namespace, family) -> list[str] | None:
    """--objectives OBJECTIVE,COST, checked; the scheduler becomes fifo (said in one line where it
    was ASHA: its rungs rank trials on one number). None without --objectives."""
    from trainables.layout import COST_METRICS

    if not args.objectives:
        return None
    names = objective_names(args.objectives)
    if len(names) != 2 or names[0] != family.objective or names[1] not in COST_METRICS:
        raise UsageError(f"--objectives takes {family.objective},COST with COST one of {', '.join(COST_METRICS)} "
                         f"(e.g. {family.objective},sample_ms), got {args.objectives!r}")
    if args.scheduler == "pbt":
        raise UsageError("--objectives searches with Optuna, and PBT doesn't use it; use --scheduler fifo")
    if args.warm_start:
        raise UsageError("--warm-start seeds a study of one objective; it can't seed a Pareto search yet")
    if args.scheduler == "asha":
        print("[sweep] a Pareto search runs every trial to --max-steps (fifo): ASHA can't rank trials on two "
              "objectives", flush=True)
        args.scheduler = "fifo"
    return names


def search_tuning(args: argparse.Namespace, max_steps: int) -> dict:
    """ASHA's rungs and TPE's start-up and mode, checked: each option belongs to one scheduler or
    searcher, and the first rung must come before the last step."""
    asha = {"grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
    tpe = {"startup_trials": args.startup_trials, "multivariate": args.multivariate}
    for options, needs, used in ((asha, "--scheduler asha", args.scheduler == "asha"),
                                 (tpe, "--searcher tpe", args.searcher == "tpe" and args.scheduler != "pbt")):
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        if given and not used:
            raise UsageError(f"{' and '.join(given)} tune{'s' if len(given) == 1 else ''} {needs}, which this sweep "
                             f"doesn't use")
    if args.reduction_factor is not None and args.reduction_factor < 2:
        raise UsageError(f"--reduction-factor must be 2 or more (the share of trials a rung keeps is 1/N), "
                         f"got {args.reduction_factor}")
    if args.grace_period is not None and args.grace_period > max_steps:
        raise UsageError(f"--grace-period {args.grace_period} is more than a trial's {max_steps} steps")
    return {k: v for k, v in {**asha, **tpe}.items() if v is not None}


def make_spec(args: argparse.Namespace) -> SweepSpec:
    """Everything that defines the sweep, saved as sweep.json (and reused by --resume)."""
    from search_spaces import default_space_path, defaults_point, load_space, parse_overrides, read_space
    from trainables.models import get_family, metric_descriptions

    family = get_family(args.model)
    objectives = pareto_objectives(args, family)
    overrides = parse_overrides(args.set, family.defaults)
    dataset = args.dataset or family.default_dataset
    budget = QUICK if args.quick else DEFAULTS
    sizes = {key: getattr(args, key) if getattr(args, key) is not None else default for key, default in budget.items()}
    if args.budget:
        sizes.update(split_budget(args, sizes))
    if args.scheduler == "pbt" and (sizes["final_steps"] or args.budget):
        print("[sweep] no final phase under PBT: its population already trains to the last step", flush=True)
        sizes["final_steps"] = 0
    if objectives and (sizes["final_steps"] or args.budget):
        print("[sweep] no final phase in a Pareto search: its result is the front (orchestrator.best --pareto), not "
              "one winner to train on", flush=True)
        sizes["final_steps"] = 0
    for note in fit_budget(sizes):
        print(f"[sweep] {note}", flush=True)
    tuning = search_tuning(args, sizes["max_steps"])
    space_file = Path(args.space) if args.space else default_space_path(args.model)
    space = load_space(space_file, set(family.defaults), overrides)  # validate before anything starts
    mutated = list(pbt_mutations(family, space)) if args.scheduler == "pbt" else None
    baseline = None
    if args.warm_start:
        print("[sweep] the family's defaults are not trial 1: the warm start's earlier sweeps had them", flush=True)
    elif args.scheduler != "pbt":  # the family's defaults are trial 1: the baseline every sweep shows
        searched = read_space(space_file.read_text(), set(family.defaults), str(space_file), overrides)
        baseline, why = defaults_point(searched, family.defaults)
        if baseline is None:
            print(f"[sweep] the family's defaults are not trial 1: {why} in {space_file}", flush=True)
    spec = SweepSpec(
        **sizes, model=args.model, dataset=dataset, data_root=str(Path(args.data_root).resolve()) if args.data_root else None,
        subset=args.subset, data_options={k: getattr(args, k) for k in DATA_OPTIONS if getattr(args, k) is not None},
        space_toml=space_file.read_text(), space_file=str(space_file), overrides=overrides,
        scheduler=args.scheduler, searcher=args.searcher, seed=args.seed, fid_features=args.fid_features,
        feature_check=not args.skip_feature_check,
        precision=args.precision, channels_last=args.channels_last,
        objective=family.objective, mode=family.mode, metric_descriptions=metric_descriptions(args.model),
        keep_checkpoints=args.keep_checkpoints, pbt_mutates=mutated, baseline=baseline, final_top=args.final_top,
        budget=args.budget if args.scheduler != "pbt" and not objectives else None, objectives=objectives, **tuning,
        final_decay=bool(args.final_decay),
        warm_start=[location(e).uri for e in args.warm_start or []])
    if spec.final_decay and not has_final_phase(spec):
        raise UsageError("--final-decay shapes the final phase, and this sweep has none (give --final-steps or --budget)")
    return spec


AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` leaves the cluster's config on the head


def autoscaler_capacity(kind: str, config_file: Path = AUTOSCALER_CONFIG) -> float:
    """The most of `kind` (CPU or GPU) the autoscaler may give this cluster: each node type's
    resources times its max_workers (the head once), from the config `ray up` left on the head.
    0 when the sweep does not run on a `ray up` head or the config says nothing of `kind`."""
    import yaml

    try:
        config = yaml.safe_load(config_file.expanduser().read_text())
        head = config.get("head_node_type")
        return float(sum(float((node.get("resources") or {}).get(kind, 0)) *
                         (1 if name == head else int(node.get("max_workers", 0)))
                         for name, node in config.get("available_node_types", {}).items()))
    except (OSError, AttributeError, TypeError, ValueError, yaml.YAMLError):
        return 0.0


def default_concurrency(resources: Resources, local: bool) -> int:
    """How many trials the cluster fits at once: what it has now or, on an autoscaling cluster,
    what the autoscaler may add (so that waiting trials make it scale up to that); a trial that
    can never fit a local Ray is bad input."""
    import ray

    cluster = ray.cluster_resources()
    gpus, cpus, workers = resources.gpus_per_worker, resources.cpus_per_worker, resources.workers_per_trial
    kind, per_worker = ("GPU", gpus) if gpus > 0 else ("CPU", cpus)
    need, have = max(per_worker, 0.01) * workers, cluster.get(kind, 0)
    if not local:
        have = max(have, autoscaler_capacity(kind))
    if kind == "CPU":
        need += TRIAL_DRIVER_CPU
    if need > have:
        message = (f"a trial needs {need:g} {kind} ({workers} workers x {per_worker:g}) "
                   f"but the cluster has {have:g}")
        if local:
            raise UsageError(message + "; lower --workers-per-trial or --cpus-per-worker")
        print(f"[sweep] warning: {message}; trials wait until the autoscaler adds nodes", flush=True)
    return max(1, int(have / need))


def pbt_mutations(family, space: dict) -> dict:
    """What PBT may mutate: the family's learning rates (`mutable`) that the space searches, each
    resampled from its domain or scaled by 0.8 or 1.2."""
    if not family.mutable:
        raise UsageError(f"--scheduler pbt mutates learning rates, and {family.name} lists none (its `mutable` "
                         f"is empty); use asha or fifo")
    fixed = (int, float, str, bool)
    mutations = {k: space[k] for k in family.mutable if k in space and not isinstance(space[k], fixed)}
    if not mutations:
        raise UsageError(f"--scheduler pbt mutates {', '.join(family.mutable)}, but the search space fixes them; "
                         f"give at least one a distribution")
    return mutations


def trial_settings(spec: SweepSpec, resources: Resources, max_failures: int, exp: Location, refs: dict) -> TrialSettings:
    """What every trial of the sweep gets (trainables.ray_trial.run_trial)."""
    info = spec.dataset_info
    return TrialSettings(
        loop=LoopSettings(model=spec.model, seed=spec.seed,
                          max_steps=spec.max_steps, eval_every=spec.eval_every, log_every=spec.log_every,
                          eval_samples=spec.eval_samples, precision=spec.precision, channels_last=spec.channels_last),
        resources=resources,
        checkpoint=CheckpointConfig(model=spec.model, dataset=info["name"], shape=info["shape"], data=info,
                                    feature_network=spec.feature_network["name"], experiment=spec.name,
                                    precision=spec.precision),
        checkpoint_root=(exp / CHECKPOINTS_DIR).uri, keep_checkpoints=spec.keep_checkpoints,
        max_failures=max_failures,
        report_checkpoints=spec.scheduler == "pbt",  # PBT restarts trials from Tune's checkpoints
        data_ref=refs["data_ref"], feature_ref=refs["feature_ref"])


def make_trainable(settings: TrialSettings):
    """run_trial with the sweep's settings and each trial's resources: a one-worker trial trains in
    its Tune trial's process, which then needs the worker's resources."""
    from ray import tune

    from trainables.ray_trial import run_trial

    resources = settings.resources
    resources = ({"cpu": resources.cpus_per_worker, "gpu": resources.gpus_per_worker} if resources.in_process
                 else {"cpu": TRIAL_DRIVER_CPU})
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings), resources)


def build_tuner(spec: SweepSpec, args: argparse.Namespace, exp: Location, settings: TrialSettings, resume: bool):
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from orchestrator.searcher import StudyStorage, fetch_study, warm_start
    from search_spaces import parse_space
    from trainables.models import get_family
    from ray.tune.search import ConcurrencyLimiter

    from trainables.ray_trial import DivergedIsPruned, ExtendableSearch

    family = get_family(spec.model)
    trainable = make_trainable(settings)
    if resume:
        keep_results_before_resume(exp)
        if spec.scheduler != "pbt":
            fetch_study(exp, resume=True)  # the working copy of a remote study, where the restored searcher looks
        return tune.Tuner.restore(exp.uri, trainable=trainable, resume_unfinished=True, resume_errored=False)

    param_space = parse_space(spec.space_toml, set(family.defaults), spec.space_file, spec.overrides)
    if spec.scheduler == "pbt":
        return pbt_tuner(spec, args, family, trainable, param_space, exp)
    metric, mode = f"{family.objective}_best", family.mode
    if spec.objectives:  # a Pareto search: Optuna's sampler ranks on both (Tune's own ranking stays off)
        metric, mode = [metric, spec.objectives[1]], [family.mode, "min"]
    if not args.verbose:  # not a line per trial from Optuna too
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    fetch_study(exp, resume=False)
    storage = StudyStorage(exp.uri)
    sampler = SAMPLERS[spec.searcher](spec)
    if getattr(args, "warm_from", None):
        seeded, dropped = warm_start(storage, spec.name, family.mode, param_space, args.warm_from, family.defaults)
        print(f"[sweep] warm start: {seeded} trials of {', '.join(e.spec['name'] for e in args.warm_from)} seed the "
              f"study" + (f"; {dropped} dropped (a hyperparameter outside this sweep's space)" if dropped else ""),
              flush=True)
    searcher = DivergedIsPruned(metric=metric, mode=mode, sampler=sampler, study_name=spec.name,
                                points_to_evaluate=[spec.baseline] if spec.baseline else None,
                                storage=storage)
    scheduler = asha_scheduler(spec) if spec.scheduler == "asha" else FIFOScheduler()
    search = ExtendableSearch(ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent), (exp / SPEC_FILE).uri)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=None if spec.objectives else metric, mode=None if spec.objectives else mode,
                                    search_alg=search, scheduler=scheduler,
                                    num_samples=spec.trials, reuse_actors=REUSE_TRIAL_PROCESSES),
        run_config=run_config(spec, args, exp),
    )


def run_config(spec: SweepSpec, args: argparse.Namespace, exp: Location, final: bool = False):
    """Tune restarts a trial whose driver died (its node was lost) up to --max-failures times; the
    restarted trial's TorchTrainer continues from the trial's latest checkpoint. (A failed training
    worker is restarted by the trainer itself, see run_trial.) Reports made before a restart are
    kept (KeepResultsOnRestart). A trial that finds its storage full stops the sweep so that
    `--resume` continues it (StopWhenStorageFull). On remote storage the Optuna study's working
    copy is uploaded as each trial ends (UploadStudy)."""
    from ray import tune

    from orchestrator.searcher import UploadStudy
    from trainables.ray_trial import KeepResultsOnRestart, StopWhenStorageFull, SweepProgress

    callbacks = [KeepResultsOnRestart(), StopWhenStorageFull()]
    if live_dashboard(args):
        from dashboards.live import TellLiveDashboard

        callbacks.append(TellLiveDashboard())
    if not args.verbose:
        callbacks.append(SweepProgress(spec.final_top, spec.objective, spec.mode) if final else
                         SweepProgress(spec.trials, spec.objective, spec.mode, (exp / SPEC_FILE).uri))
    if exp.remote and spec.scheduler != "pbt" and not final:
        callbacks.append(UploadStudy(exp))
    if args.mlflow:
        from orchestrator.tracking import LogToMLflow

        callbacks.append(LogToMLflow(args.mlflow, spec.name, None if exp.remote else exp.local / CHECKPOINTS_DIR,
                                     spec.max_steps))
    name, where = (FINAL_DIR, exp) if final else (spec.name, exp.parent)  # the final phase: NAME/final
    if not args.verbose:
        # Tune's new output engine prints its boxed configuration, the results folder and a TensorBoard
        # hint into Ray's temporary folder whatever the verbosity; its older one is silent at 0
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return tune.RunConfig(name=name, storage_path=where.uri, callbacks=callbacks,
                          verbose=None if args.verbose else 0,
                          failure_config=tune.FailureConfig(max_failures=args.max_failures))


def live_dashboard(args: argparse.Namespace) -> bool:
    return not args.no_dashboard and args.dashboard_every > 0


def start_live_dashboard(spec: SweepSpec, args: argparse.Namespace, exp: Location, log):
    """The dashboard while the sweep runs (dashboards.live): its first page now, its path said
    before the trials start; None where it is off."""
    if not live_dashboard(args):
        return None
    from dashboards.live import LiveDashboard
    from dashboards.page import LiveState

    finals = spec.final_top if has_final_phase(spec) else 0
    live = LiveDashboard(exp.uri, LiveState(spec.trials + finals), args.dashboard_every)
    out = live.start()
    if out:
        log(f"dashboard: {out} (rebuilt as the sweep runs; the page reloads itself)")
    return live


def has_final_phase(spec: SweepSpec) -> bool:
    """--final-steps or --budget asks for one; PBT's population already trains to the end."""
    return spec.scheduler != "pbt" and bool(spec.final_steps or spec.budget)


def final_steps(spec: SweepSpec, spent: int) -> int:
    """Steps each final trial trains: --final-steps, or under --budget what the search left of it
    (it spent `spent` trial-steps), shared by the --final-top trials, so search + final <= budget."""
    return spec.final_steps or max(0, spec.budget - spent) // spec.final_top


def final_resources(resources: Resources, final_top: int, local: bool) -> Resources:
    """On this machine's own Ray the final phase's few CPU trials share all its cores (torch's
    threads follow cpus_per_worker): a lone final trial would otherwise train on one core while
    the others idle. On a cluster a trial can't span nodes, so it keeps the sweep's resources."""
    if not local or resources.gpus_per_worker > 0 or not resources.in_process:
        return resources
    return replace(resources, cpus_per_worker=max(resources.cpus_per_worker, (os.cpu_count() or 1) // final_top))


def final_tuner(spec: SweepSpec, args: argparse.Namespace, exp: Location, settings: TrialSettings):
    """The final phase, once the search has finished: the top --final-top configurations continue
    from their best checkpoints for --final-steps more steps (under --budget, what the search left
    of it, shared), as Tune trials of their own (STORAGE/NAME/final/), checkpointed like any other.
    None where there is no final phase; a resumed one continues its unfinished trials."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if not has_final_phase(spec):
        return None
    trainable = make_trainable(replace(settings, loop=replace(settings.loop, final_decay=spec.final_decay)))
    if (exp / FINAL_DIR / "tuner.pkl").is_file():  # it started before this run of the sweep
        return tune.Tuner.restore((exp / FINAL_DIR).uri, trainable=trainable, resume_unfinished=True,
                                  resume_errored=False)
    searched = load_experiment(exp.uri)
    steps = final_steps(spec, spent=sum(t.last_step for t in searched.search_trials))
    parents: dict[str, tuple] = {}
    for trial, checkpoint in searched.ranked_checkpoints():
        if len(parents) < spec.final_top and not trial.final_from:
            parents.setdefault(trial.trial_id, (trial, checkpoint))
    if steps < 1 or not parents:
        print(f"[sweep] no final phase: {'the search spent the budget' if parents else 'no checkpoint to go on from'}",
              flush=True)
        return None
    configs = [{**trial.params, FINAL_FROM: searched.where(checkpoint.path).uri, FINAL_UNTIL: checkpoint.step + steps}
               for trial, checkpoint in parents.values()]
    print(f"[sweep] final phase: {len(configs)} best configuration(s) continue from their best checkpoints for "
          f"{steps} more steps: " + ", ".join(f"trial {trial.trial_id} from step {checkpoint.step}"
                                               for trial, checkpoint in parents.values()), flush=True)
    return tune.Tuner(
        trainable,
        param_space={key: tune.choice([config[key] for config in configs]) for key in configs[0]},
        tune_config=tune.TuneConfig(metric=f"{spec.objective}_best", mode=spec.mode, num_samples=len(configs),
                                    search_alg=BasicVariantGenerator(points_to_evaluate=configs,
                                                                     max_concurrent=spec.max_concurrent),
                                    reuse_actors=REUSE_TRIAL_PROCESSES),
        run_config=run_config(spec, args, exp, final=True),
    )


def pbt_tuner(spec: SweepSpec, args: argparse.Namespace, family, trainable, param_space: dict, exp: Location):
    """Population Based Training (Jaderberg et al. 2017), as Ray's own pbt_dcgan_mnist example: the
    trials are the population, random draws from the space start them (Optuna can't drive PBT, whose
    exploration replaces a searcher's). At every evaluation (a checkpoint), a trial in the bottom
    quarter by the current objective (not the running best) restarts from a top-quarter trial's
    checkpoint with that trial's hyperparameters, learning rates mutated."""
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    scheduler = PopulationBasedTraining(time_attr="step", metric=family.objective, mode=family.mode,
                                        perturbation_interval=spec.eval_every,
                                        hyperparam_mutations=pbt_mutations(family, param_space))
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=spec.trials, reuse_actors=REUSE_TRIAL_PROCESSES,
                                    search_alg=BasicVariantGenerator(max_concurrent=spec.max_concurrent,
                                                                     random_state=spec.seed)),
        # Tune keeps its copy of every checkpoint (run_trial_*/checkpoint_*), for trials to restart
        # from. Ray 2.60's pruning of them (num_to_keep) deletes twice what PBT's extra saves of a
        # function trainable register twice, and fails.
        run_config=run_config(spec, args, exp),
    )


def check_name(name: str) -> None:
    """--name is one folder inside --storage: never a path that leads elsewhere."""
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(f"--name {name!r} must be a plain folder name (no '/', not '.' or '..'); "
                         f"use --storage for where it goes")


def resume_spec(exp: Location, args: argparse.Namespace) -> SweepSpec:
    """The sweep.json of the experiment to continue, once it is sure to be one, of this model family
    and of this name (its name places the checkpoints: a copied or edited file must not move them)."""
    try:
        saved = json.loads((exp / SPEC_FILE).read_text())
    except (OSError, ValueError):
        raise UsageError(f"nothing to resume: {exp} is not an experiment of this project") from None
    try:
        if not is_spec(saved) or not all(key in saved for key in SweepSpec.REQUIRED):
            raise TypeError
        spec = SweepSpec.from_json(saved)
    except TypeError:
        raise UsageError(f"cannot resume {exp}: its {SPEC_FILE} is incomplete or not this project's") from None
    if spec.model != args.model:
        raise UsageError(f"{exp} is a {spec.model} sweep, not {args.model}; "
                         f"resume it as `{spec.model}` or choose another --name")
    if spec.name != args.name:
        raise UsageError(f"cannot resume {exp}: its {SPEC_FILE} names the experiment {spec.name!r} "
                         f"(renamed or copied?); resume it under its own name")
    if args.warm_start:
        raise UsageError("--warm-start seeds a new sweep; --resume continues one (its study already holds its trials)")
    check_same_space(spec, args)
    return spec


def extend(spec: SweepSpec, args: argparse.Namespace, exp: Location) -> bool:
    """`--resume --trials N` with N above the sweep's count raises it (ExtendableSearch reads it
    from sweep.json); returns whether it did."""
    if args.trials is None or args.trials == spec.trials:
        return False
    if args.trials < spec.trials:
        raise UsageError(f"--trials {args.trials} is fewer than the {spec.trials} trials {exp} already has; "
                         f"a sweep can be extended, not shortened")
    if spec.scheduler == "pbt":
        raise UsageError("a PBT sweep can't be extended: its population is fixed when it starts")
    print(f"[sweep] extending {spec.name} from {spec.trials} to {args.trials} trials; the Optuna study goes on",
          flush=True)
    spec.trials = args.trials
    return True


def warm_start_experiments(args: argparse.Namespace, spec: SweepSpec) -> list:
    """The earlier experiments of --warm-start, read (files only) and checked before Ray starts."""
    if not args.warm_start:
        return []
    if spec.scheduler == "pbt":
        raise UsageError("--warm-start seeds an Optuna study; PBT doesn't use one")
    loaded = [load_experiment(e) for e in args.warm_start]
    for exp in loaded:
        if exp.spec.get("model") != spec.model or exp.objective != spec.objective:
            raise UsageError(f"--warm-start {exp.source} is a {exp.spec.get('model')} sweep; this is {spec.model}")
    return loaded


def check_same_space(spec: SweepSpec, args: argparse.Namespace) -> None:
    """A resumed or extended sweep searches the space it started with: --space or --set given
    again must not change it (start a new sweep for another space)."""
    from search_spaces import parse_overrides
    from trainables.models import get_family

    changed = []
    if args.space and Path(args.space).read_text() != spec.space_toml:
        changed.append(f"--space {args.space}")
    if args.set and parse_overrides(args.set, get_family(spec.model).defaults) != spec.overrides:
        changed.append("--set " + " ".join(args.set))
    if args.objectives and objective_names(args.objectives) != spec.objectives:
        changed.append(f"--objectives {args.objectives}")
    if changed:
        raise UsageError(f"{' and '.join(changed)} changes the search space of {spec.name}; resume it with its own "
                         f"(from {SPEC_FILE}) or start a new sweep")


def check_storage(exp: Location) -> None:
    """Refuse storage that can't hold the experiment before any data is read: a local path that
    is a file or not writable; remote storage that doesn't answer, lacks its bucket or won't take
    a write (trainables.storage.check_reachable)."""
    if exp.remote:
        check_reachable(exp)
        return
    path = exp.local
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"cannot write the experiment to {exp}: {existing} is a file, not a folder; "
                         f"choose another --storage or --name")
    try:  # permissions don't tell (root, read-only mounts, /proc): try an empty folder, removed at once
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as e:
        raise UsageError(f"cannot write the experiment to {exp}: {existing} is not writable "
                         f"({e.strerror or e}); choose another --storage") from None


def check_shared(root: Location) -> None:
    """On a cluster of several nodes, a local --storage must be a folder every node sees (NFS):
    trials elsewhere would keep their checkpoints on their own disks. A file written here must be
    visible from every other live node (as Ray Train's own storage validation marker checks)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if root.remote:
        return
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if autoscaler_capacity("CPU") + autoscaler_capacity("GPU") > 0:
        print(f"[sweep] warning: --storage {root} is a local path and the autoscaler may add nodes, which this "
              f"check can't see; it must be a path every node mounts (NFS), or use s3://", flush=True)
    if not others:
        return
    marker = root / f".shared-storage-check-{os.getpid()}-{time.time_ns()}"
    try:
        marker.write_text("written by orchestrator.sweep on the driver's node; removed at once")
    except OSError as e:
        raise UsageError(f"cannot write to --storage {root} ({e.strerror or first_line(e)}); choose another") from None

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.isfile(path)

    calls = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
             .remote(marker.path) for n in others]
    seen = []
    try:
        for call in calls:  # a node that died meanwhile, or never answers, says nothing either way
            try:
                seen.append(ray.get(call, timeout=60))
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                seen.append(True)
    finally:
        marker.delete_file()
    blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(others, seen) if not ok]
    if blind:
        raise UsageError(f"--storage {root} is this machine's own disk: {len(blind)} of the "
                         f"cluster's other nodes ({', '.join(blind)}) don't see it, and their trials would keep "
                         f"checkpoints there; pass --storage s3://BUCKET/PATH (or set ${STORAGE_ENV}) or a path "
                         f"every node mounts")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        list_models()
        return 0
    if not args.model:
        raise UsageError("name a model family to sweep (see --list)")

    def log(message: str) -> None:
        print(f"[sweep] {message}", flush=True)

    root = location(args.storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE)
    if args.name is not None:
        check_name(args.name)
    if args.resume:
        if not args.name:
            raise UsageError("--resume needs --name of the experiment to continue")
        exp = root / args.name
        if exp.remote:
            check_storage(exp)
        spec = resume_spec(exp, args)
        extended = extend(spec, args, exp)
    else:
        extended = False
        spec = make_spec(args)
        spec.name = args.name or f"{args.model}-{spec.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        exp = root / spec.name
        check_storage(exp)
        args.warm_from = warm_start_experiments(args, spec)
        if (exp / SPEC_FILE).exists():
            raise UsageError(f"{exp} already exists; pass --resume to continue it or choose another --name")
    run_options(args, spec, log)
    check_address(args.address)
    if args.mlflow:
        from orchestrator.tracking import check_mlflow

        check_mlflow(args.mlflow)

    from trainables.datasets import load_dataset
    from trainables.models import get_family
    from trainables.feature_checks import checked_feature_network
    from trainables.features import feature_network

    data = load_dataset(spec.dataset, spec.data_root, spec.subset, spec.data_options)
    val = "" if data.val_x is None else f"{len(data.val_x)} validation (what trials are scored on) / "
    log(f"dataset {data.name}: {len(data.train_x)} training / {val}{len(data.test_x)} held-out images "
        f"of shape {data.shape} from {data.source}; split {data.split}")
    family = get_family(spec.model)
    family.check_data(data.info())
    check_hyperparameters(family, data, spec)  # e.g. --set normal_class=12 fails here
    where = {"data_root": spec.data_root, "data_options": spec.data_options, "subset": spec.subset}
    if args.resume and spec.feature_network:  # the space its trials were scored in: not chosen or checked again
        saved = spec.feature_network
        feature_state, meta = feature_network(saved.get("kind") or spec.fid_features, data, log=log, **where)
        spec.feature_network = {**meta, **{k: saved[k] for k in ("check",) if k in saved}}
    else:
        feature_state, spec.feature_network = checked_feature_network(spec.fid_features, data, spec.eval_samples,
                                                                      log=log, check=spec.feature_check, **where)
    spec.dataset_info = {**data.info(), "options": spec.data_options or {}}  # checkpoints keep the options
    resources = trial_resources(args, spec)
    spec.resources = asdict(resources)
    dashboard_url, local = init_ray(args.address, args.verbose)
    import ray

    check_shared(exp.parent)  # before anything is written there
    if not args.resume or extended:  # an extended sweep's searcher reads the new count there
        spec.created = spec.created or time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            (exp / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=1))
        except OSError as e:
            raise UsageError(f"cannot write the experiment to {exp} ({e.strerror or first_line(e)}); "
                             f"choose another --storage") from None

    # decoded once per sweep; trials read them from the object store (zero-copy on each node)
    refs = {"data_ref": ray.put(data.evaluated_on_val()), "feature_ref": ray.put((feature_state, spec.feature_network))}
    settings = trial_settings(spec, resources, args.max_failures, exp, refs)
    spec.max_concurrent = args.max_concurrent or default_concurrency(resources, local)
    log(f"experiment {exp}: {spec.trials} trials of up to {spec.max_steps} steps, "
        f"{spec.max_concurrent} at a time, {search_description(spec)}")
    if spec.scheduler == "pbt":
        log(f"PBT explores by itself (mutating {', '.join(spec.pbt_mutates)} every {spec.eval_every} steps "
            f"from other trials' checkpoints); Optuna is not used")
    log(f"Ray dashboard: {'http://' + dashboard_url if dashboard_url else 'not running'}")

    start = time.time()
    tuner = build_tuner(spec, args, exp, settings, args.resume)
    from trainables.ray_trial import HideTuneRestoreHint

    logging.getLogger("ray.tune.tune").addFilter(HideTuneRestoreHint())
    # Tune's TensorBoard logger warns of every infinite value: the running best of a trial that has
    # only its untrained reading (a reference, never its best) is one
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    write_sweep_status(exp, "running")
    live = start_live_dashboard(spec, args, exp, log)
    stopped = False
    try:
        tuner.fit()  # Ctrl-C: Tune stops the trials, saves its state and returns
        if not any(t.tune_status in UNFINISHED for t in load_experiment(exp.uri).trials):
            final = final_tuner(spec, args, exp, replace(settings, resources=final_resources(
                settings.resources, spec.final_top, local)))
            if final:
                final.fit()
            if args.rescore_top and spec.objectives:
                log(f"no re-scoring in a Pareto search: it ranks by {spec.objective} alone, and the front is by the "
                    f"sweep's readings (python -m orchestrator.rescore {exp} re-scores the best by {spec.objective})")
            elif args.rescore_top:
                rescore_winners(exp, args.rescore_top, log)
    except KeyboardInterrupt:  # a second Ctrl-C: Tune stops at once
        stopped = True
    except Exception as e:  # e.g. Optuna's study could not be written: the disk filled outside a checkpoint
        full = full_cause(e)
        if full is None:
            raise
        ray.shutdown()
        print(f"storage {exp} is full ({first_line(full)}); free space, then --resume", file=sys.stderr, flush=True)
        return 1
    finally:
        if live:
            live.stop()
            if args.verbose:
                log(f"live dashboard: {live.builds} builds, {live.cpu_seconds:.1f} s of CPU")
    elapsed = time.time() - start
    ray.shutdown()
    resume = (f"python -m orchestrator.sweep {spec.model} --name {spec.name} --storage {exp.parent} --resume")
    return report(exp, elapsed, dashboard=not args.no_dashboard, resume=resume, stopped=stopped)


def check_hyperparameters(family, data, spec: SweepSpec) -> None:
    """What the family refuses of its hyperparameters on this data (their bounds: e.g. a batch size
    of 0; prepare_data: e.g. a normal_class the data lacks; the loop: an unknown augment or
    diffaug), before Ray starts: the values the space and --set fix, each value of a choice it
    searches with the fixed ones, and the ends of every range it searches."""
    from search_spaces import read_space
    from trainables.family import check_bounds, check_searched_bounds
    from trainables.loop import check_transforms

    def check(hp: dict) -> None:
        check_bounds(family, hp)
        check_transforms(hp)
        family.prepare_data(data, hp)

    space = read_space(spec.space_toml, set(family.defaults), spec.space_file, spec.overrides)
    fixed = {**family.defaults, **{name: value for name, value in space.items() if not isinstance(value, dict)}}
    check(fixed)
    for name, table in space.items():
        if isinstance(table, dict) and table["distribution"] == "choice":
            for value in table["values"]:
                check({**fixed, name: value})
        elif isinstance(table, dict):
            check_searched_bounds(family, name, table)


def rescore_winners(exp: Location, top: int, log) -> None:
    """The sweep's end: its best checkpoints re-scored over seeds (orchestrator.rescore). Where that
    fails, one line says so and the sweep's own results stand."""
    from orchestrator.rescore import describe, rescore

    loaded = load_experiment(exp.uri)
    if not loaded.ranked_checkpoints(rescored=False):
        return  # nothing to re-score: the report says why
    try:
        print(describe(rescore(loaded, top, log=log)), flush=True)
    except Exception as e:
        print(f"[sweep] warning: re-scoring failed ({type(e).__name__}: {first_line(e)}); the ranking is the sweep's "
              f"own; try again with: python -m orchestrator.rescore {exp}", file=sys.stderr, flush=True)


UNFINISHED = ("PENDING", "RUNNING", "PAUSED")  # Tune's statuses of trials a stopped sweep left


def report(where: Location, elapsed: float, dashboard: bool, resume: str, stopped: bool = False) -> int:
    """The leaderboard, the best checkpoint and the dashboard (uploaded too, for remote storage).
    The exit code tells the truth: 1 unless some trial wrote a checkpoint and not every trial
    errored, with one line on stderr saying how many errored and where their error.txt files are;
    130 (as for Ctrl-C) when the sweep was interrupted, with the command that continues it."""
    import pandas as pd

    exp = load_experiment(where.uri)  # a remote experiment is read from its local mirror
    unfinished = [t for t in exp.trials if t.tune_status in UNFINISHED]
    exp.sweep_status = {"status": "interrupted" if stopped or unfinished else "finished"}
    write_sweep_status(where, exp.sweep_status["status"])
    write_histories(exp)
    full = sorted({t.results[-1][STORAGE_FULL] for t in exp.trials if t.results and t.results[-1].get(STORAGE_FULL)}
                  | {t.error for t in exp.trials if t.error and "No space left" in t.error})
    table = leaderboard(exp)
    print(f"\nexperiment: {where}  ({elapsed:.0f} s)")
    if len(table):
        columns = [c for c in table.columns if c != "checkpoint"]
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
            print(table[columns].to_string())
    if dashboard and not full:
        from dashboards.build import build

        out = build([exp])  # as loaded above: a remote experiment is not mirrored twice
        print(f"dashboard: {out}" + (f" (and {where}/{DASHBOARD_FILE})" if where.remote else ""))
    ranked = exp.ranked_checkpoints()
    for trial in (t for t in exp.trials if t.final_from):  # what the final phase made of its configurations
        parent = next((t for t in exp.trials if t.trial_id == trial.parent), None)
        before, after = (exp.best_of(t) or {} for t in (parent, trial)) if parent else ({}, exp.best_of(trial) or {})
        print(f"final phase: trial {trial.trial_id} trained trial {trial.parent}'s configuration on to step "
              f"{trial.last_step}: {exp.objective} {before.get(exp.objective, math.nan):.4g} -> "
              f"{after.get(exp.objective, math.nan):.4g}")
    front = exp.pareto_front()
    if front:
        knee = exp.knee(front)
        print(f"Pareto front of {exp.objective} vs {exp.cost}, cheapest first ({len(front)} of {len(exp.trials)} "
              f"trials): " + "; ".join(f"trial {t.trial_id} {c.metrics[exp.objective]:.4g} at {c.metrics[exp.cost]:.4g}"
                                       + (" (knee)" if i == knee else "") for i, (t, c) in enumerate(front)))
        print(f"export the front: python -m orchestrator.best {where} --pareto")
    if ranked:
        trial, ckpt = ranked[0]
        print(f"best checkpoint: {exp.where(ckpt.path)}  ({exp.objective} {ckpt.metrics[exp.objective]:.4g} "
              f"at step {ckpt.step}, trial {trial.trial_id}" + (f", {exp.feature_space} features" if exp.feature_space else "")
              + (", ranked by the re-scored mean" if exp.rescored_entries() else "") + ")")
        if where.remote:
            print(f"pull it: python -m orchestrator.best {where} --top 3")
    if full:  # nothing more is written there; the experiment is whole up to each trial's last checkpoint
        print(f"{full[0]} (the sweep stopped; each trial continues from its last complete checkpoint: {resume})",
              file=sys.stderr, flush=True)
        return 1
    statuses = exp.statuses()
    errored = [t for t in exp.trials if statuses[t.trial_id] == "errored"]
    if errored:
        files = [str(exp.where(t.path / ERROR_FILE)) for t in errored if (t.path / ERROR_FILE).is_file()]
        print(f"{len(errored)} of {len(exp.trials)} trials errored" + (f"; see {', '.join(files)}" if files else
              " (diverged; see the leaderboard)"), file=sys.stderr, flush=True)
    if exp.sweep_status["status"] == "interrupted":
        print(f"interrupted: {len(unfinished)} of {len(exp.trials)} trials unfinished; continue the sweep with: "
              f"{resume}", file=sys.stderr, flush=True)
        return 130
    if not ranked:
        print("no checkpoint was written (every trial failed or stopped before its first evaluation)",
              file=sys.stderr, flush=True)
    return 0 if ranked and len(errored) < len(exp.trials) else 1


if __name__ == "__main__":
    run(main)
