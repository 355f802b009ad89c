"""python -m orchestrator.sweep MODEL [options]: a Ray Tune + Optuna sweep of one model family.

Each trial trains one set of hyperparameters with the shared loop (trainables/loop.py): in its
Tune trial's own process, or, with several workers (DDP) or --torch-trainer, under a Ray Train
TorchTrainer (trainables/ray_trial.py). The Optuna TPE searcher picks hyperparameters, ASHA stops
poor trials early (or Population Based Training, without Optuna, moves poor trials onto better
ones' checkpoints with mutated learning rates), and each trial keeps its best checkpoints by the
family's objective. At the end the sweep prints a leaderboard and writes dashboard.html.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from orchestrator.options import (DEFAULT_STORAGE, DEFAULTS, FITS, PRECISIONS, QUICK, QUICK_BUDGET, QUICK_RESCORE_TOP,
                                  RESCORE_TOP, HORIZONS, LONG_REDUCTION, SCHEDULERS, SEARCH_SHARE, SEARCHERS, STORAGE_ENV,
                                  SweepOptions)
from trainables.cli import (Parser, UsageError, feature_space, fraction, image_size, non_negative_float, non_negative_int,
                            positive_int, run)
from trainables.settings import FEATURE_KINDS

def build_parser() -> Parser:
    p = Parser(prog="python -m orchestrator.sweep", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="model family to sweep (see --list)")
    p.add_argument("--list", action="store_true", help="list the model families: default dataset, objective, search space")
    p.add_argument("--family-module", action="append", default=[], metavar="FILE.py|MODULE",
                   help="a file or module of your own that defines model families (@register_family; "
                        "docs/extending.md), imported here and on every node of the cluster (repeatable)")
    budget = p.add_argument_group("budget")
    budget.add_argument("--quick", action="store_true",
                        help=f"the demo's small budget: --budget {QUICK_BUDGET} over {QUICK['trials']} search trials, "
                             f"evaluated every {QUICK['eval_every']} steps on {QUICK['eval_samples']} images; with "
                             f"--max-steps or --final-steps, those ({QUICK['final_steps']} final steps unless given) "
                             f"instead of the budget (explicit options below still win)")
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
                             f"{QUICK['final_steps']} with --quick and --max-steps)")
    budget.add_argument("--final-top", type=positive_int, default=1,
                        help="configurations the final phase trains on (default 1)")
    budget.add_argument("--final-decay", action=argparse.BooleanOptionalAction, default=None,
                        help="the final phase's learning rates fall linearly to 0 over its steps (a cooldown, as in "
                             "warmup-stable-decay schedules) rather than staying at the searched values (default off)")
    budget.add_argument("--final-halving", action=argparse.BooleanOptionalAction, default=None,
                        help="the final phase as successive halving: the top --final-top configurations and the "
                             "family's defaults (trial 1) continue together; at each rung the weaker half stop, and "
                             "the last one trains to the end (default off: it pays where the defaults end best and "
                             "start slow, as the VAE's; docs/benchmarks.md section 9)")
    budget.add_argument("--budget", type=positive_int, metavar="TRIAL_STEPS",
                        help=f"total training steps of all trials, search and final phase: the search spends at most "
                             f"{SEARCH_SHARE:.0%}% of it (see --search-horizon), the final phase what the search "
                             f"left (see --final-halving)")
    budget.add_argument("--search-horizon", choices=HORIZONS,
                        help=f"how --budget's search share ({SEARCH_SHARE:.0%}%) is spent: even (the default) gives "
                             f"each search trial an equal share as its --max-steps; long (ASHA only) lets the best "
                             f"trials train up to half of it, with rungs x{LONG_REDUCTION}, and stops the search when "
                             f"the share is spent")
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
    data.add_argument("--fit", choices=FITS,
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
    search.add_argument("--scheduler", choices=SCHEDULERS, default="asha",
                        help="asha: stop poor trials early (default); fifo: run every trial to --max-steps; "
                             "pbt: Population Based Training of the --trials as one population: every --eval-every "
                             "steps the worst quarter continue from the best quarter's checkpoints with mutated "
                             "learning rates (the searched ones of the family's `mutable`); Optuna is not used")
    search.add_argument("--searcher", choices=SEARCHERS, default="tpe",
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
    cluster.add_argument("--precision", choices=PRECISIONS, default="fp32",
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
                        f"(default {RESCORE_TOP}, {QUICK_RESCORE_TOP} with --quick, on fewer images or checkpoints "
                        f"where that would take more than 15%% of the sweep's time; given, in full; 0: skip)")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray Tune's trial status tables (default: one line as each trial ends)")
    return p


def list_models() -> None:
    from search_spaces import SpaceError, describe, load_space, space_path
    from trainables.models import all_families

    for name, family in all_families().items():
        print(f"{name}: {family.description}")
        print(f"  default dataset: {family.default_dataset}; objective: {family.objective} ({family.mode}); "
              f"inference: {', '.join(family.inference_modes)}")
        try:
            space = describe(load_space(space_path(family), set(family.defaults)))
        except SpaceError as e:
            space = {"search space": e.args[0]}
        for key, text in space.items():
            print(f"  {key}: {text}")


class CommandLineLines(logging.Formatter):
    """The sweep's own lines as the command line prints them: `[sweep] ...` as it goes, the
    closing report plain."""

    def format(self, record: logging.LogRecord) -> str:
        return ("[sweep] " if record.name == "orchestrator.sweep" else "") + record.getMessage()


@contextlib.contextmanager
def command_line_logging():
    """While the command runs, the orchestrator's log goes to the terminal: progress to stdout,
    warnings and errors to stderr."""
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err.setLevel(logging.WARNING)
    logger = logging.getLogger("orchestrator")
    saved = logger.level, logger.propagate
    for handler in (out, err):
        handler.setFormatter(CommandLineLines())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        for handler in (out, err):
            handler.flush()
            logger.removeHandler(handler)
        logger.level, logger.propagate = saved


def main(argv: list[str] | None = None) -> int:
    from orchestrator.run import run_sweep
    from trainables.models import load_family_module

    args = build_parser().parse_args(argv)
    if args.list:
        for module in args.family_module:
            load_family_module(module)
        list_models()
        return 0
    if not args.model:
        raise UsageError("name a model family to sweep (see --list)")
    with command_line_logging():
        return run_sweep(SweepOptions.from_args(args)).exit_code


if __name__ == "__main__":
    run(main)
