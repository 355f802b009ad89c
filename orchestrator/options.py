"""What a sweep is asked for, typed: SweepOptions (the command line's options, or run_sweep's
arguments, checked as the command line checks them) and RunOptions (how it runs, beside what it
searches), with the defaults they fall back on."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trainables.cli import UsageError, feature_space, fraction
from trainables.cli import image_size as parse_image_size  # not the field of that name

QUICK = {"trials": 8, "max_steps": 600, "eval_every": 150, "log_every": 25, "eval_samples": 1000, "final_steps": 600}
# --quick's --budget in trial-steps (8 search trials of up to 450 steps, the final phase what they left), unless
# --max-steps or --final-steps is given: then QUICK's steps (docs/benchmarks.md section 9, the demo's budget)
QUICK_BUDGET = 4800
DEFAULTS = {"trials": 16, "max_steps": 2000, "eval_every": 250, "log_every": 50, "eval_samples": 2000,
            "final_steps": 0}
DATA_OPTIONS = ("image_size", "fit", "classes", "attribute", "folders", "swap_domains", "heldout_fraction")  # to the loader
STORAGE_ENV, DEFAULT_STORAGE = "ORCHESTRATOR_STORAGE", "experiments"  # where storage defaults to
RESCORE_TOP = 5  # checkpoints the sweep re-scores at its end (orchestrator.rescore)
QUICK_RESCORE_TOP = 1  # under quick: the trained winner only (~15 s for a demo DCGAN on 2 cores), so the demo stays under 3 min
SEARCH_SHARE = 0.75  # of the budget: the search's; the final phase gets what the search left
# --budget's split of the search (docs/benchmarks.md section 9): "even" (the default) gives each
# search trial SEARCH_SHARE / --trials; "long" lets ASHA train the best search trials up to half the
# search's share, rungs x4, and stops the search once it has spent its share
HORIZONS, LONG_REDUCTION = ("long", "even"), 4
SCHEDULERS, SEARCHERS, PRECISIONS, FITS = ("asha", "fifo", "pbt"), ("tpe", "random"), ("fp32", "bf16", "fp16"), \
    ("crop", "pad", "stretch")


@dataclass
class SweepOptions:
    """A sweep as asked for: one field per option of `python -m orchestrator.sweep` (`--max-steps`
    is max_steps); None takes the default, or on resume what the sweep was run with. `set` fixes
    hyperparameters ({"lr_g": 1e-3} or ["lr_g=1e-3"]); family_module names files or modules that
    define families of your own (register_family)."""
    model: str
    quick: bool = False
    trials: int | None = None
    max_steps: int | None = None
    eval_every: int | None = None
    log_every: int | None = None
    eval_samples: int | None = None
    final_steps: int | None = None
    final_top: int = 1
    final_decay: bool | None = None
    final_halving: bool | None = None
    budget: int | None = None
    search_horizon: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    subset: int | None = None
    image_size: int | str | None = None
    fit: str | None = None
    heldout_fraction: float | None = None
    classes: str | None = None
    attribute: str | None = None
    folders: str | None = None
    swap_domains: bool | None = None
    space: str | None = None
    set: Any = field(default_factory=list)
    scheduler: str = "asha"
    searcher: str = "tpe"
    grace_period: int | None = None
    reduction_factor: int | None = None
    startup_trials: int | None = None
    multivariate: bool | None = None
    fid_features: str = "auto"
    skip_feature_check: bool = False
    objectives: str | None = None
    warm_start: list | None = None
    seed: int = 0
    storage: str | None = None
    name: str | None = None
    resume: bool = False
    keep_checkpoints: int = 3
    address: str | None = None
    workers_per_trial: int | None = None
    torch_trainer: bool | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float | None = None
    precision: str = "fp32"
    channels_last: bool = False
    max_concurrent: int | None = None
    max_failures: int | None = None
    no_dashboard: bool | None = None
    dashboard_every: float | None = None
    mlflow: str | None = None
    rescore_top: int | None = None
    verbose: bool = False
    family_module: list = field(default_factory=list)

    POSITIVE = ("trials", "max_steps", "eval_every", "log_every", "eval_samples", "final_steps", "final_top", "budget",
                "subset", "grace_period", "reduction_factor", "keep_checkpoints", "workers_per_trial", "max_concurrent")
    COUNTS = ("startup_trials", "rescore_top")  # whole numbers >= 0
    AMOUNTS = ("cpus_per_worker", "gpus_per_worker", "dashboard_every")  # numbers >= 0
    CHOICES = {"scheduler": SCHEDULERS, "searcher": SEARCHERS, "precision": PRECISIONS}  # never None
    PARSED = {"image_size": parse_image_size, "heldout_fraction": fraction, "fid_features": feature_space}  # the CLI's types

    def __post_init__(self):
        """What the command line's types check, checked for a caller from Python too (one line,
        UsageError); lists may be given as one string, and `set` as a dict."""
        if isinstance(self.set, dict):
            self.set = [f"{k}={v}" for k, v in self.set.items()]
        for name in ("set", "family_module", "warm_start"):
            if isinstance(getattr(self, name), (str, Path)):
                setattr(self, name, [getattr(self, name)])
        self.family_module = [str(m) for m in self.family_module]
        if isinstance(self.objectives, (list, tuple)):
            self.objectives = ",".join(self.objectives)
        for name in self.POSITIVE + self.COUNTS + self.AMOUNTS:
            value, least, whole = getattr(self, name), 1 if name in self.POSITIVE else 0, name not in self.AMOUNTS
            if value is not None and (isinstance(value, bool) or not isinstance(value, int if whole else (int, float))
                                      or not math.isfinite(value) or value < least):
                raise UsageError(f"{name} must be {'a whole number' if whole else 'a number'} >= {least}, got {value!r}")
        for name, allowed in {**self.CHOICES, "fit": FITS, "search_horizon": HORIZONS}.items():
            value = getattr(self, name)
            if (value is not None or name in self.CHOICES) and value not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        for name, parse in self.PARSED.items():
            if getattr(self, name) is not None:
                try:
                    setattr(self, name, parse(str(getattr(self, name))))
                except argparse.ArgumentTypeError as e:
                    raise UsageError(f"{name}: {e}") from None

    @classmethod
    def from_args(cls, args) -> SweepOptions:
        """The parsed command line's options."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class RunOptions:
    """How a sweep runs, beside what it searches: saved in sweep.json (`run_options`) and reused by
    a resume unless given again (`verbose` is this run's alone)."""
    rescore_top: int = RESCORE_TOP
    no_dashboard: bool = False
    dashboard_every: float = 30.0
    mlflow: str | None = None
    max_concurrent: int | None = None
    max_failures: int = 1
    rescore_scaled: bool = True  # rescore_top was not given: the re-scoring is scaled to the sweep's time
    verbose: bool = False

    SAVED = ("rescore_top", "no_dashboard", "dashboard_every", "mlflow", "max_concurrent", "max_failures",
             "rescore_scaled")

    @property
    def live_dashboard(self) -> bool:
        return not self.no_dashboard and self.dashboard_every > 0
