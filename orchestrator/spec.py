"""The one complete spec of a sweep, built from its options before Ray starts (plan_sweep): the
sweep.json of a new sweep, or that of the sweep to resume with what this run may change, checked."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.options import (DATA_OPTIONS, DEFAULT_STORAGE, DEFAULTS, QUICK, QUICK_BUDGET, QUICK_RESCORE_TOP,
                                  RESCORE_TOP, LONG_REDUCTION, SEARCH_SHARE, STORAGE_ENV, RunOptions, SweepOptions)
from trainables.cli import UsageError
from trainables.experiment import is_spec, load_experiment
from trainables.layout import COST_METRICS, SPEC_FILE
from trainables.settings import Resources, SweepSpec
from trainables.storage import Location, location

log = logging.getLogger("orchestrator.sweep")

@dataclass
class SweepPlan:
    """Everything decided before the data is read: the experiment, its spec, how it runs."""
    exp: Location
    spec: SweepSpec
    run: RunOptions
    resources: Resources
    resume: bool = False
    extended: bool = False  # a resume that raised the trial count (sweep.json is written again)
    warm_from: list = field(default_factory=list)  # the loaded experiments of warm_start

    @property
    def resume_command(self) -> str:
        spec, source = self.spec, self.spec.family_source or {}
        module = f" --family-module {source['file']}" if source.get("file") and not source.get("installed") else ""
        return (f"python -m orchestrator.sweep {spec.model}{module} --name {spec.name} --storage {self.exp.parent} "
                f"--resume")


def plan_sweep(options: SweepOptions) -> SweepPlan:
    """The sweep's spec, built once and checked: a new one from the options, or the saved one of the
    experiment to resume (with the run options and resources given again)."""
    root = location(options.storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE)
    if options.name is not None:
        check_name(options.name)
    if options.resume:
        if not options.name:
            raise UsageError("--resume needs --name of the experiment to continue")
        exp = root / options.name
        if exp.remote:
            check_storage(exp)
        spec = resume_spec(exp, options)
        extended, warm_from = extend(spec, options, exp), []
    else:
        spec = make_spec(options)
        spec.name = options.name or f"{options.model}-{spec.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        exp = root / spec.name
        check_storage(exp)
        extended, warm_from = False, warm_start_experiments(options, spec)
        if (exp / SPEC_FILE).exists():
            raise UsageError(f"{exp} already exists; pass --resume to continue it or choose another --name")
    run = run_options(options, spec)
    resources = trial_resources(options, spec)
    spec.resources = asdict(resources)
    return SweepPlan(exp, spec, run, resources, options.resume, extended, warm_from)


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


def run_options(options: SweepOptions, spec: SweepSpec) -> RunOptions:
    """The options of how a sweep runs (RunOptions.SAVED): a new sweep's as given or their defaults,
    saved in sweep.json; a resumed one's from there unless given again for this run (said in one
    line; sweep.json is written once, as for resources, but by an extension)."""
    defaults = {**asdict(RunOptions()), "rescore_top": QUICK_RESCORE_TOP if options.quick else RESCORE_TOP}
    given = {k: getattr(options, k) for k in RunOptions.SAVED if getattr(options, k, None) is not None}
    if options.rescore_top is not None:  # asked for: re-scored in full, whatever it costs
        given["rescore_scaled"] = False
    saved = {k: v for k, v in spec.run_options.items() if k in RunOptions.SAVED} if options.resume else {}
    reused = {k: v for k, v in saved.items() if k not in given}
    chosen = {k: v for k, v in {**defaults, **reused, **given}.items() if k in RunOptions.SAVED}
    shown = [option_text(k, v) for k, v in reused.items() if v != defaults[k] and k != "rescore_scaled"]
    if shown:
        log.info(f"resuming with the options it was run with ({SPEC_FILE}): {' '.join(shown)}")
    # an MLflow URI with a user or password in it is used, never written down
    spec.run_options = {**chosen, "mlflow": None if urlsplit(str(chosen["mlflow"])).password else chosen["mlflow"]}
    return RunOptions(**chosen, verbose=options.verbose)


def option_text(key: str, value) -> str:
    """A run option as the command line writes it."""
    flag = f"--{key.replace('_', '-')}"
    return flag if value is True else f"{flag} {value}"


def trial_resources(options: SweepOptions, spec: SweepSpec) -> Resources:
    """A new sweep's resources per trial come from the options; a resumed one's from its
    sweep.json, where options given again win (said in one line)."""
    given = {f.name: getattr(options, f.name) for f in fields(Resources) if getattr(options, f.name) is not None}
    saved = Resources.from_json(spec.resources or {}) if options.resume else Resources()
    changed = [f"--{k.replace('_', '-')} {getattr(saved, k)} -> {v}" for k, v in given.items() if getattr(saved, k) != v]
    if options.resume and changed:
        log.info(f"resuming with resources changed from its {SPEC_FILE}: {', '.join(changed)}")
    return replace(saved, **given)


def split_budget(options: SweepOptions, sizes: dict, scheduler: str) -> dict:
    """--budget B, divided by --search-horizon (docs/benchmarks.md section 9 compares them):
    - even (the default): each search trial may train SEARCH_SHARE * B / trials steps;
    - long (ASHA only): the search may spend SEARCH_SHARE * B trial-steps in all, and is stopped
      there (SearchBudget); ASHA may train a trial up to half of that, with rungs x4, so most trials
      stop at the first rungs and the best train thousands of steps.
    Steps are rounded down to a multiple of --eval-every where they are one or more; the final phase
    gets the rest, worked out once the search has spent what it did (orchestrator.tuners.final_tuner)."""
    if options.max_steps or options.final_steps:
        raise UsageError("--budget divides the steps itself: give --budget or --max-steps / --final-steps, not both")
    one_phase = scheduler == "pbt" or bool(options.objectives)  # no final phase there
    horizon = options.search_horizon or "even"
    if horizon == "long" and (scheduler != "asha" or one_phase):
        raise UsageError("--search-horizon long needs ASHA to stop most trials early: use it with --scheduler asha "
                         "and one objective")
    share = 1.0 if one_phase else SEARCH_SHARE
    per_trial = search_trial_steps(options.budget, sizes["trials"], sizes["eval_every"], share)
    if per_trial < 1:
        raise UsageError(f"--budget {options.budget} is less than one step for each of {sizes['trials']} trials")
    if horizon == "even":
        return {"max_steps": per_trial, "final_steps": 0}
    search = int(options.budget * SEARCH_SHARE)
    return {"max_steps": max(per_trial, on_evaluations(search // 2, sizes["eval_every"])), "final_steps": 0,
            "search_budget": search}


def on_evaluations(steps: int, eval_every: int) -> int:
    """`steps` rounded down to a multiple of --eval-every where that is one or more."""
    return steps // eval_every * eval_every if steps >= eval_every else steps


def search_trial_steps(budget: int, trials: int, eval_every: int, share: float = SEARCH_SHARE) -> int:
    """A search trial's steps under --budget's even split: share * budget / trials, on evaluations."""
    return on_evaluations(int(budget * share) // trials, eval_every)


def long_horizon_rungs(sizes: dict) -> dict:
    """ASHA under --search-horizon long: rungs x4 from a first one where all the trials together
    spend a quarter of the search's trial-steps (on an evaluation, at least one)."""
    first = on_evaluations(sizes["search_budget"] // (4 * sizes["trials"]), sizes["eval_every"])
    return {"reduction_factor": LONG_REDUCTION, "grace_period": min(sizes["max_steps"], max(first, sizes["eval_every"]))}


def objective_names(text: str) -> list[str]:
    """--objectives' comma-separated names."""
    return [name.strip() for name in text.split(",")]


def pareto_objectives(options: SweepOptions, family) -> list[str] | None:
    """--objectives OBJECTIVE,COST, checked; None without it."""
    if not options.objectives:
        return None
    names = objective_names(options.objectives)
    if len(names) != 2 or names[0] != family.objective or names[1] not in COST_METRICS:
        raise UsageError(f"--objectives takes {family.objective},COST with COST one of {', '.join(COST_METRICS)} "
                         f"(e.g. {family.objective},sample_ms), got {options.objectives!r}")
    if options.scheduler == "pbt":
        raise UsageError("--objectives searches with Optuna, and PBT doesn't use it; use --scheduler fifo")
    if options.warm_start:
        raise UsageError("--warm-start seeds a study of one objective; it can't seed a Pareto search yet")
    return names


def search_tuning(options: SweepOptions, scheduler: str, max_steps: int) -> dict:
    """ASHA's rungs and TPE's start-up and mode, checked: each option belongs to one scheduler or
    searcher, and the first rung must come before the last step."""
    asha = {"grace_period": options.grace_period, "reduction_factor": options.reduction_factor}
    tpe = {"startup_trials": options.startup_trials, "multivariate": options.multivariate}
    for tuning, needs, used in ((asha, "--scheduler asha", scheduler == "asha"),
                                (tpe, "--searcher tpe", options.searcher == "tpe" and scheduler != "pbt")):
        given = [f"--{k.replace('_', '-')}" for k, v in tuning.items() if v is not None]
        if given and not used:
            raise UsageError(f"{' and '.join(given)} tune{'s' if len(given) == 1 else ''} {needs}, which this sweep "
                             f"doesn't use")
    if options.reduction_factor is not None and options.reduction_factor < 2:
        raise UsageError(f"--reduction-factor must be 2 or more (the share of trials a rung keeps is 1/N), "
                         f"got {options.reduction_factor}")
    if options.grace_period is not None and options.grace_period > max_steps:
        raise UsageError(f"--grace-period {options.grace_period} is more than a trial's {max_steps} steps")
    return {k: v for k, v in {**asha, **tpe}.items() if v is not None}


def quick_budget(options: SweepOptions) -> SweepOptions:
    """--quick is --budget QUICK_BUDGET, unless a budget or steps are given: then theirs."""
    if options.quick and not (options.budget or options.max_steps or options.final_steps):
        return replace(options, budget=QUICK_BUDGET)
    return options


def step_budget(options: SweepOptions, scheduler: str, pareto: bool) -> dict:
    """Trials, steps and intervals: the options', else --quick's or the defaults; --budget divided."""
    budget = QUICK if options.quick else DEFAULTS
    sizes = {key: getattr(options, key) if getattr(options, key) is not None else default
             for key, default in budget.items()}
    if options.search_horizon and not options.budget:
        raise UsageError("--search-horizon divides --budget: give --budget too")
    if options.budget:
        sizes.update(split_budget(options, sizes, scheduler))
    if scheduler == "pbt" and (sizes["final_steps"] or options.budget):
        log.info("no final phase under PBT: its population already trains to the last step")
        sizes["final_steps"] = 0
    if pareto and (sizes["final_steps"] or options.budget):
        log.info("no final phase in a Pareto search: its result is the front (orchestrator.best --pareto), not one "
                 "winner to train on")
        sizes["final_steps"] = 0
    for note in fit_budget(sizes):
        log.info(note)
    return sizes


def make_spec(options: SweepOptions) -> SweepSpec:
    """Everything that defines the sweep, saved as sweep.json (and reused by --resume)."""
    from search_spaces import defaults_point, load_space, parse_overrides, read_space, space_path
    from trainables.models import family_source, get_family, metric_descriptions

    family = get_family(options.model)
    options = quick_budget(options)
    objectives = pareto_objectives(options, family)
    scheduler = options.scheduler
    if objectives and scheduler == "asha":
        log.info("a Pareto search runs every trial to --max-steps (fifo): ASHA can't rank trials on two objectives")
        scheduler = "fifo"
    overrides = parse_overrides(options.set, family.defaults)
    sizes = step_budget(options, scheduler, bool(objectives))
    tuning = search_tuning(options, scheduler, sizes["max_steps"])
    if sizes.get("search_budget"):
        tuning = {**long_horizon_rungs(sizes), **tuning}
    space_file = Path(options.space) if options.space else space_path(family)
    space = load_space(space_file, set(family.defaults), overrides)  # validate before anything starts
    mutated = list(pbt_mutations(family, space)) if scheduler == "pbt" else None
    baseline = None
    if options.warm_start:
        log.info("the family's defaults are not trial 1: the warm start's earlier sweeps had them")
    elif scheduler != "pbt":  # the family's defaults are trial 1: the baseline every sweep shows
        searched = read_space(space_file.read_text(), set(family.defaults), str(space_file), overrides)
        baseline, why = defaults_point(searched, family.defaults)
        if baseline is None:
            log.info(f"the family's defaults are not trial 1: {why} in {space_file}")
    spec = SweepSpec(
        **sizes, model=options.model, dataset=options.dataset or family.default_dataset,
        data_root=str(Path(options.data_root).resolve()) if options.data_root else None, subset=options.subset,
        data_options={k: getattr(options, k) for k in DATA_OPTIONS if getattr(options, k) is not None},
        space_toml=space_file.read_text(), space_file=str(space_file), overrides=overrides,
        scheduler=scheduler, searcher=options.searcher, seed=options.seed, fid_features=options.fid_features,
        feature_check=not options.skip_feature_check, precision=options.precision,
        channels_last=options.channels_last, objective=family.objective, mode=family.mode,
        metric_descriptions=metric_descriptions(options.model), keep_checkpoints=options.keep_checkpoints,
        pbt_mutates=mutated, baseline=baseline, final_top=options.final_top,
        budget=options.budget if scheduler != "pbt" and not objectives else None, objectives=objectives, **tuning,
        final_decay=bool(options.final_decay), final_halving=bool(options.final_halving),
        family_source=family_source(family),
        warm_start=[location(e).uri for e in options.warm_start or []])
    for flag, given in (("--final-decay", spec.final_decay), ("--final-halving", spec.final_halving)):
        if given and not has_final_phase(spec):
            raise UsageError(f"{flag} shapes the final phase, and this sweep has none: {no_final_phase_reason(spec)}")
    return spec


def has_final_phase(spec: SweepSpec) -> bool:
    """--final-steps or --budget asks for one; PBT's population already trains to the end."""
    return spec.scheduler != "pbt" and bool(spec.final_steps or spec.budget)


def no_final_phase_reason(spec: SweepSpec) -> str:
    """Why has_final_phase(spec) is false, as the fix a user can make."""
    if spec.scheduler == "pbt":
        return "PBT's population already trains to the last step"
    if spec.objectives:
        return "a Pareto search's result is its front, not one winner to train on"
    return "give --final-steps or --budget"


def halving_rungs(trial_steps: int, candidates: int, eval_every: int) -> tuple[list[int], list[int], int] | None:
    """--final-halving: `candidates` configurations share the final phase's `trial_steps` as successive
    halving. All train to the first rung; at each rung the better half (at least one) go on, to a
    rung twice as far; the last one trains on to the end. Half the trial-steps go to the rungs, half
    to the last one after them. Returns the rungs (steps since each candidate's start, on
    evaluations), how many go on past each, and the last one's steps in all; None where the first
    rung would fall before one evaluation, or with one candidate."""
    if candidates < 2:
        return None
    keep = [candidates]
    while keep[-1] > 1:
        keep.append(max(1, keep[-1] // 2))
    # the trial-steps up to the last rung, in first rungs: keep[0] to the first, keep[i] for 2**(i-1) more
    shares = keep[0] + sum(keep[i] * 2 ** (i - 1) for i in range(1, len(keep) - 1))
    first = trial_steps // 2 // shares // eval_every * eval_every
    if first < eval_every:
        return None
    rungs = [first * 2 ** i for i in range(len(keep) - 1)]
    return rungs, keep[1:], rungs[-1] + trial_steps - first * shares


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


def check_name(name: str) -> None:
    """--name is one folder inside --storage: never a path that leads elsewhere."""
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(f"--name {name!r} must be a plain folder name (no '/', not '.' or '..'); "
                         f"use --storage for where it goes")


def resume_spec(exp: Location, options: SweepOptions) -> SweepSpec:
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
    if spec.model != options.model:
        raise UsageError(f"{exp} is a {spec.model} sweep, not {options.model}; "
                         f"resume it as `{spec.model}` or choose another --name")
    if spec.name != options.name:
        raise UsageError(f"cannot resume {exp}: its {SPEC_FILE} names the experiment {spec.name!r} "
                         f"(renamed or copied?); resume it under its own name")
    if options.warm_start:
        raise UsageError("--warm-start seeds a new sweep; --resume continues one (its study already holds its trials)")
    from trainables.models import family_for, family_source

    # a family of the user's own: as --family-module gave it again, else from where the sweep recorded it
    spec.family_source = family_source(family_for(spec.model, spec.family_source))
    check_same_space(spec, options)
    return spec


def extend(spec: SweepSpec, options: SweepOptions, exp: Location) -> bool:
    """`--resume --trials N` with N above the sweep's count raises it (ExtendableSearch reads it
    from sweep.json); returns whether it did."""
    if options.trials is None or options.trials == spec.trials:
        return False
    if options.trials < spec.trials:
        raise UsageError(f"--trials {options.trials} is fewer than the {spec.trials} trials {exp} already has; "
                         f"a sweep can be extended, not shortened")
    if spec.scheduler == "pbt":
        raise UsageError("a PBT sweep can't be extended: its population is fixed when it starts")
    log.info(f"extending {spec.name} from {spec.trials} to {options.trials} trials; the Optuna study goes on")
    spec.trials = options.trials
    return True


def warm_start_experiments(options: SweepOptions, spec: SweepSpec) -> list:
    """The earlier experiments of --warm-start, read (files only) and checked before Ray starts."""
    if not options.warm_start:
        return []
    if spec.scheduler == "pbt":
        raise UsageError("--warm-start seeds an Optuna study; PBT doesn't use one")
    loaded = [load_experiment(str(e)) for e in options.warm_start]
    for exp in loaded:
        if exp.spec.get("model") != spec.model or exp.objective != spec.objective:
            raise UsageError(f"--warm-start {exp.source} is a {exp.spec.get('model')} sweep; this is {spec.model}")
    return loaded


def check_same_space(spec: SweepSpec, options: SweepOptions) -> None:
    """A resumed or extended sweep searches the space it started with: --space or --set given
    again must not change it (start a new sweep for another space)."""
    from search_spaces import parse_overrides
    from trainables.models import get_family

    changed = []
    if options.space and Path(options.space).read_text() != spec.space_toml:
        changed.append(f"--space {options.space}")
    if options.set and parse_overrides(options.set, get_family(spec.model).defaults) != spec.overrides:
        changed.append("--set " + " ".join(options.set))
    if options.objectives and objective_names(options.objectives) != spec.objectives:
        changed.append(f"--objectives {options.objectives}")
    if changed:
        raise UsageError(f"{' and '.join(changed)} changes the search space of {spec.name}; resume it with its own "
                         f"(from {SPEC_FILE}) or start a new sweep")


def check_storage(exp: Location) -> None:
    """Refuse storage that can't hold the experiment before any data is read: a local path that
    is a file or not writable; remote storage that doesn't answer, lacks its bucket or won't take
    a write (trainables.storage.check_reachable)."""
    import tempfile

    from trainables.storage import check_reachable

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
