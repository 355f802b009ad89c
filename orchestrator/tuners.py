"""The Ray Tune assembly of a sweep, from its spec and run options: the trainable with each
trial's resources, Optuna's sampler under ASHA (or FIFO), Population Based Training, the final
phase, and the run config with the sweep's callbacks."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace

from orchestrator.cluster import TRIAL_DRIVER_CPU
from orchestrator.options import RunOptions
from orchestrator.spec import has_final_phase, pbt_mutations
from trainables.experiment import load_experiment
from trainables.experiment_writers import keep_results_before_resume
from trainables.layout import CHECKPOINTS_DIR, FINAL_DIR, SPEC_FILE, WARM_START_FILE
from trainables.settings import CheckpointConfig, FinalStart, LoopSettings, Resources, SweepSpec, TrialSettings
from trainables.storage import Location

log = logging.getLogger("orchestrator.sweep")

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


def random_sampler(spec: SweepSpec):
    import optuna

    return optuna.samplers.RandomSampler(seed=spec.seed)


SAMPLERS = {"tpe": tpe_sampler, "random": random_sampler}  # by --searcher


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
        if spec.search_budget:
            text += (f", the search stops at {spec.search_budget} trial-steps of --budget {spec.budget} "
                     f"(--search-horizon long)")
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


def trial_settings(spec: SweepSpec, resources: Resources, max_failures: int, exp: Location, refs: dict) -> TrialSettings:
    """What every trial of the sweep gets (trainables.ray_trial.run_trial)."""
    from trainables.models import get_family

    info = spec.dataset_info
    in_main = (spec.family_source or {}).get("module") == "__main__"  # no file to import: the class goes itself
    return TrialSettings(
        loop=LoopSettings(model=spec.model, seed=spec.seed,
                          max_steps=spec.max_steps, eval_every=spec.eval_every, log_every=spec.log_every,
                          eval_samples=spec.eval_samples, precision=spec.precision, channels_last=spec.channels_last,
                          family_source=spec.family_source,
                          family_class=type(get_family(spec.model)) if in_main else None),
        resources=resources,
        checkpoint=CheckpointConfig(model=spec.model, dataset=info["name"], shape=info["shape"], data=info,
                                    feature_network=spec.feature_network["name"], experiment=spec.name,
                                    precision=spec.precision, family_source=spec.family_source),
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


def build_tuner(spec: SweepSpec, run: RunOptions, exp: Location, settings: TrialSettings, resume: bool,
                warm_from: list = ()):
    """The search's Tuner: a new one, or the stopped one of a resumed sweep."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from orchestrator.searcher import StudyStorage, fetch_study, warm_start
    from orchestrator.tune_plugins import DivergedIsPruned, ExtendableSearch
    from search_spaces import parse_space
    from trainables.models import get_family

    family = get_family(spec.model)
    trainable = make_trainable(settings)
    if resume:
        keep_results_before_resume(exp)
        if spec.scheduler != "pbt":
            fetch_study(exp, resume=True)  # the working copy of a remote study, where the restored searcher looks
        return tune.Tuner.restore(exp.uri, trainable=trainable, resume_unfinished=True, resume_errored=False)

    param_space = parse_space(spec.space_toml, set(family.defaults), spec.space_file, spec.overrides)
    if spec.scheduler == "pbt":
        return pbt_tuner(spec, run, family, trainable, param_space, exp)
    metric, mode = f"{family.objective}_best", family.mode
    if spec.objectives:  # a Pareto search: Optuna's sampler ranks on both (Tune's own ranking stays off)
        metric, mode = [metric, spec.objectives[1]], [family.mode, "min"]
    if not run.verbose:  # not a line per trial from Optuna too
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    fetch_study(exp, resume=False)
    storage = StudyStorage(exp.uri)
    sampler = SAMPLERS[spec.searcher](spec)
    if warm_from:
        seeded, dropped = warm_start(storage, spec.name, family.mode, param_space, warm_from, family.defaults)
        log.info(f"warm start: {seeded} trials of {', '.join(e.spec['name'] for e in warm_from)} seed the study"
                 + (f"; {dropped} dropped (a hyperparameter outside this sweep's space)" if dropped else ""))
        (exp / WARM_START_FILE).write_text(json.dumps({"from": [e.source.uri for e in warm_from], "seeded": seeded,
                                                       "dropped": dropped}, indent=1))
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
        run_config=run_config(spec, run, exp),
    )


def run_config(spec: SweepSpec, run: RunOptions, exp: Location, final: tuple[int, int] | None = None):
    """Tune restarts a trial whose driver died (its node was lost) up to --max-failures times; the
    restarted trial's TorchTrainer continues from the trial's latest checkpoint. (A failed training
    worker is restarted by the trainer itself, see run_trial.) Reports made before a restart are
    kept (KeepResultsOnRestart). A trial that finds its storage full stops the sweep so that
    `--resume` continues it (StopWhenStorageFull). On remote storage the Optuna study's working
    copy is uploaded as each trial ends (UploadStudy)."""
    from ray import tune

    from orchestrator.searcher import UploadStudy
    from orchestrator.progress import SweepProgress
    from orchestrator.tune_plugins import KeepResultsOnRestart, SearchBudget, StopWhenStorageFull

    callbacks = [KeepResultsOnRestart(), StopWhenStorageFull()]
    if run.live_dashboard:
        from dashboards.live import TellLiveDashboard

        callbacks.append(TellLiveDashboard())
    if not run.verbose:
        callbacks.append(SweepProgress(final[0], spec.objective, spec.mode, None, final[1]) if final else
                         SweepProgress(spec.trials, spec.objective, spec.mode, (exp / SPEC_FILE).uri, spec.max_steps))
    if exp.remote and spec.scheduler != "pbt" and not final:
        callbacks.append(UploadStudy(exp))
    if run.mlflow:
        from orchestrator.tracking import LogToMLflow

        callbacks.append(LogToMLflow(run.mlflow, spec.name, None if exp.remote else exp.local / CHECKPOINTS_DIR,
                                     spec.max_steps))
    name, where = (FINAL_DIR, exp) if final else (spec.name, exp.parent)  # the final phase: NAME/final
    stop = SearchBudget(spec.search_budget, exp.uri) if spec.search_budget and not final else None
    return tune.RunConfig(name=name, storage_path=where.uri, callbacks=callbacks, stop=stop,
                          verbose=None if run.verbose else 0,
                          failure_config=tune.FailureConfig(max_failures=run.max_failures))


def quiet_tune_output(run: RunOptions) -> None:
    """Tune's new output engine prints its boxed configuration, the results folder and a TensorBoard
    hint into Ray's temporary folder whatever the verbosity; its older one is silent at 0. Read
    when a Tuner fits: new and restored ones alike (a restored one keeps its pickled run config)."""
    if not run.verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"


def final_steps(spec: SweepSpec, spent: int, candidates: int) -> int:
    """Trial-steps of the final phase: --final-steps for each of its `candidates`, or under --budget
    what the search left of it (it spent `spent` trial-steps), so search + final <= budget."""
    return spec.final_steps * candidates if spec.final_steps else max(0, spec.budget - spent)


def shares_local_cores(resources: Resources, local: bool) -> bool:
    """Whether the final phase's trials are CPU trials in their own processes on this machine's own
    Ray, which share its cores between them (final_resources)."""
    return local and resources.in_process and resources.gpus_per_worker == 0


def final_resources(resources: Resources, candidates: int, local: bool) -> Resources:
    """On this machine's own Ray the final phase's few CPU trials share all its cores (torch's
    threads follow cpus_per_worker): a lone final trial would otherwise train on one core while
    the others idle. On a cluster a trial can't span nodes, so it keeps the sweep's resources."""
    if not shares_local_cores(resources, local):
        return resources
    return replace(resources, cpus_per_worker=max(resources.cpus_per_worker, (os.cpu_count() or 1) // candidates))


def final_candidates(spec: SweepSpec, searched) -> dict[str, tuple]:
    """The search trials the final phase continues, by trial id, each with its best checkpoint: the
    top --final-top, and under --final-halving the family's defaults (the baseline trial) too."""
    parents: dict[str, tuple] = {}
    ranked = [(trial, checkpoint) for trial, checkpoint in searched.ranked_checkpoints() if not trial.final_from]
    for trial, checkpoint in ranked:
        if len(parents) < spec.final_top:
            parents.setdefault(trial.trial_id, (trial, checkpoint))
    defaults = searched.baseline_trial if spec.final_halving else None
    for trial, checkpoint in ranked:
        if trial.trial_id == defaults:
            parents.setdefault(defaults, (trial, checkpoint))
            break
    return parents


def fit_at_once(resources: Resources, candidates: int, local: bool) -> bool:
    """Whether `candidates` final trials can train at the same time, as --final-halving's rungs need:
    on this machine's own Ray CPU trials share its cores (final_resources); elsewhere the cluster's
    CPUs and GPUs must hold them all now."""
    if shares_local_cores(resources, local):
        return True
    import ray

    total = ray.cluster_resources()
    workers = resources.workers_per_trial
    cpus = resources.cpus_per_worker if resources.in_process else TRIAL_DRIVER_CPU + resources.cpus_per_worker * workers
    return (candidates * cpus <= total.get("CPU", 0)
            and candidates * resources.gpus_per_worker * workers <= total.get("GPU", 0))


def final_tuner(spec: SweepSpec, run: RunOptions, exp: Location, settings: TrialSettings, local: bool):
    """The final phase, once the search has finished: the top --final-top configurations continue
    from their best checkpoints (under --final-halving, with the defaults, as successive halving),
    for --final-steps more steps (under --budget, what the search left of it, shared), as Tune
    trials of their own (STORAGE/NAME/final/), checkpointed like any other. None where there is no
    final phase; a resumed one continues its unfinished trials."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from orchestrator.spec import halving_rungs
    from orchestrator.tune_plugins import FinalHalving

    if not has_final_phase(spec):
        return None
    searched = load_experiment(exp.uri)
    spent = sum(t.last_step for t in searched.search_trials)
    parents, halving = final_candidates(spec, searched), None
    if spec.final_halving and len(parents) > 1:
        halving = halving_rungs(final_steps(spec, spent, len(parents)), len(parents), spec.eval_every)
        why = ("too few trial-steps for a rung on an evaluation" if not halving else None if
               fit_at_once(settings.resources, len(parents), local) else
               f"its {len(parents)} candidates can't all train at once")
        if why:
            log.info(f"no halving in the final phase: {why}; the top --final-top train on without it")
            parents, halving = final_candidates(replace(spec, final_halving=False), searched), None
    trial_steps = final_steps(spec, spent, max(1, len(parents)))
    settings = replace(settings, loop=replace(settings.loop, final_decay=spec.final_decay),
                       resources=final_resources(settings.resources, max(1, len(parents)), local))
    trainable = make_trainable(settings)
    if (exp / FINAL_DIR / "tuner.pkl").is_file():  # it started before this run of the sweep
        return tune.Tuner.restore((exp / FINAL_DIR).uri, trainable=trainable, resume_unfinished=True,
                                  resume_errored=False)
    steps = halving[2] if halving else trial_steps // max(1, len(parents))
    if steps < 1 or not parents:
        log.info(f"no final phase: {'the search spent the budget' if parents else 'no checkpoint to go on from'}")
        return None
    configs = [FinalStart(searched.where(checkpoint.path).uri, checkpoint.step + steps).config(trial.params)
               for trial, checkpoint in parents.values()]
    log.info(f"final phase: {len(configs)} configuration(s) continue from their best checkpoints for {steps} "
             f"more steps: " + ", ".join(f"trial {trial.trial_id} from step {checkpoint.step}"
                                         for trial, checkpoint in parents.values())
             + (f"; as successive halving, the weaker stopping at {', '.join(map(str, halving[0]))} steps"
                if halving else ""))
    scheduler = None
    if halving:
        starts = {searched.where(checkpoint.path).uri: checkpoint.step for _, checkpoint in parents.values()}
        scheduler = FinalHalving(f"{spec.objective}_best", spec.mode, halving[0], halving[1], starts, trial_steps,
                                 spec.eval_every)
    return tune.Tuner(
        trainable,
        param_space=choices_of(configs),
        tune_config=tune.TuneConfig(metric=f"{spec.objective}_best", mode=spec.mode, num_samples=len(configs),
                                    search_alg=BasicVariantGenerator(points_to_evaluate=configs,
                                                                     max_concurrent=len(configs) if halving else
                                                                     spec.max_concurrent),
                                    scheduler=scheduler, reuse_actors=REUSE_TRIAL_PROCESSES),
        run_config=run_config(spec, run, exp, final=(len(configs), steps)),
    )


def choices_of(configs: list[dict]) -> dict:
    """A param space that holds each of `configs` (given as Tune's points_to_evaluate, which fills
    nested values field by field: the final start's too)."""
    from ray import tune

    return {key: choices_of([c[key] for c in configs]) if isinstance(configs[0][key], dict)
            else tune.choice([c[key] for c in configs]) for key in configs[0]}


def pbt_tuner(spec: SweepSpec, run: RunOptions, family, trainable, param_space: dict, exp: Location):
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
        run_config=run_config(spec, run, exp),
    )
