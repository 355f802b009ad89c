"""run_sweep: a sweep from Python, as the command line runs it.

    >>> from orchestrator import SweepOptions, run_sweep
    >>> result = run_sweep(SweepOptions("dcgan", trials=4, max_steps=300))
    >>> result.leaderboard              # a pandas DataFrame, best first
    >>> model = result.load_best()      # trainables.checkpoints.LoadedModel: model.sample(16)

It neither exits the interpreter nor shuts down a Ray that the caller started; progress goes
through `logging` (loggers orchestrator.sweep and orchestrator.report: logging.basicConfig(
level=logging.INFO) shows it). Bad input raises trainables.errors.BadInput before Ray starts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.options import RunOptions, SweepOptions
from orchestrator.spec import SweepPlan, check_hyperparameters, has_final_phase, plan_sweep
from trainables.cli import UsageError
from trainables.experiment import leaderboard, load_experiment
from trainables.experiment_writers import write_sweep_status
from trainables.layout import SPEC_FILE
from trainables.storage import Location, first_line, full_cause
from trainables.trials import Experiment

log = logging.getLogger("orchestrator.sweep")
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")  # Tune's statuses of trials a stopped sweep left


@dataclass
class SweepResult:
    """What a sweep left: its exit code (as the command line's), the experiment as read at the end,
    where it is, and its dashboard."""
    exit_code: int
    experiment: Experiment
    location: Location
    dashboard: Path | None

    @property
    def leaderboard(self):
        """One row per trial, best first (pandas DataFrame)."""
        return leaderboard(self.experiment)

    @property
    def best_checkpoints(self) -> list[Location]:
        """The kept checkpoints, best first (by the re-scored mean where there is one)."""
        return [self.experiment.where(c.path) for _, c in self.experiment.ranked_checkpoints()]

    @property
    def rescored(self):
        """The re-scored checkpoints, best first (pandas DataFrame; empty where none was)."""
        import pandas as pd

        return pd.DataFrame(self.experiment.rescored_entries())

    def load_best(self, rank: int = 0, device=None):
        """The rank-th best checkpoint, loaded for inference (trainables.checkpoints.load_checkpoint)."""
        from trainables.checkpoints import load_checkpoint

        return load_checkpoint(self.best_checkpoints[rank].uri, device=device)


def run_sweep(options: SweepOptions | str, **changes) -> SweepResult:
    """Run a sweep: `options` (or a family name, with the options as keywords) to its results."""
    if isinstance(options, str):
        options = SweepOptions(options, **changes)
    elif changes:
        options = replace(options, **changes)
    from trainables.models import load_family_module

    for module in options.family_module:
        names = load_family_module(str(module))
        log.info(f"model families of {module}: {', '.join(names)}")
    plan = plan_sweep(options)
    return execute(plan, options.address)


def execute(plan: SweepPlan, address: str | None) -> SweepResult:
    """The planned sweep: its data and feature network checked, Ray up, the search, the final
    phase, the re-scoring of the winners and the report."""
    from orchestrator.cluster import check_address, check_shared, default_concurrency, init_ray
    from orchestrator.report import report
    from orchestrator.tuners import (build_tuner, final_tuner, quiet_tune_output, search_description,
                                     trial_settings)
    from orchestrator.tune_plugins import HideTuneRestoreHint, legacy_names

    spec, run, exp = plan.spec, plan.run, plan.exp
    check_address(address)
    if run.mlflow:
        from orchestrator.tracking import check_mlflow

        check_mlflow(run.mlflow)
    data, feature_state = prepare_data(plan)
    connection = init_ray(address, run.verbose, spec.family_source)
    import ray

    try:
        check_shared(exp.parent)  # before anything is written there
        if not plan.resume or plan.extended:  # an extended sweep's searcher reads the new count there
            spec.created = spec.created or time.strftime("%Y-%m-%d %H:%M:%S")
            try:
                (exp / SPEC_FILE).write_text(json.dumps(spec.to_json(), indent=1))
            except OSError as e:
                raise UsageError(f"cannot write the experiment to {exp} ({e.strerror or first_line(e)}); "
                                 f"choose another --storage") from None
        # decoded once per sweep; trials read them from the object store (zero-copy on each node)
        refs = {"data_ref": ray.put(data.evaluated_on_val()),
                "feature_ref": ray.put((feature_state, spec.feature_network))}
        settings = trial_settings(spec, plan.resources, run.max_failures, exp, refs)
        spec.max_concurrent = run.max_concurrent or default_concurrency(plan.resources, connection.local)
        log.info(f"experiment {exp}: {spec.trials} trials of up to {spec.max_steps} steps, "
                 f"{spec.max_concurrent} at a time, {search_description(spec)}")
        if spec.scheduler == "pbt":
            log.info(f"PBT explores by itself (mutating {', '.join(spec.pbt_mutates)} every {spec.eval_every} steps "
                     f"from other trials' checkpoints); Optuna is not used")
        if connection.started_here:
            log.info(f"Ray dashboard: {'http://' + connection.dashboard_url if connection.dashboard_url else 'not running'}")

        start = time.time()
        if plan.resume:
            legacy_names()  # an experiment of an earlier version pickled the plug-ins under their old names
        quiet_tune_output(run)
        tuner = build_tuner(spec, run, exp, settings, plan.resume, plan.warm_from)
        tune_log = logging.getLogger("ray.tune.tune")
        if not any(isinstance(f, HideTuneRestoreHint) for f in tune_log.filters):
            tune_log.addFilter(HideTuneRestoreHint())
        # Tune's TensorBoard logger warns of every infinite value: the running best of a trial that
        # has only its untrained reading (a reference, never its best) is one
        logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
        write_sweep_status(exp, "running")
        live = start_live_dashboard(plan)
        stopped = False
        try:
            tuner.fit()  # Ctrl-C: Tune stops the trials, saves its state and returns
            if not any(t.tune_status in UNFINISHED for t in load_experiment(exp.uri).trials):
                final = final_tuner(spec, run, exp, settings, connection.local)
                if final:
                    final.fit()
                if run.rescore_top and spec.objectives:
                    log.info(f"no re-scoring in a Pareto search: it ranks by {spec.objective} alone, and the front is "
                             f"by the sweep's readings (python -m orchestrator.rescore {exp} re-scores the best by "
                             f"{spec.objective})")
                elif run.rescore_top:
                    cpus = os.cpu_count() if connection.local else int(ray.cluster_resources().get("CPU", 1))
                    rescore_winners(exp, run, time.time() - start, cpus or 1)
        except KeyboardInterrupt:  # a second Ctrl-C: Tune stops at once
            stopped = True
        except Exception as e:  # e.g. Optuna's study could not be written: the disk filled outside a checkpoint
            full = full_cause(e)
            if full is None:
                raise
            log.warning(f"storage {exp} is full ({first_line(full)}); free space, then --resume")
            return SweepResult(1, load_experiment(exp.uri), exp, None)
        finally:
            if live:
                live.stop()
                if run.verbose:
                    log.info(f"live dashboard: {live.builds} builds, {live.cpu_seconds:.1f} s of CPU")
        elapsed = time.time() - start
    finally:
        if connection.started_here:
            ray.shutdown()
    closing = report(exp, elapsed, dashboard=not run.no_dashboard, resume=plan.resume_command, stopped=stopped)
    return SweepResult(closing.code, closing.experiment, exp, closing.dashboard)


def prepare_data(plan: SweepPlan) -> tuple:
    """The sweep's data, read once and checked against the family and its hyperparameters, and the
    FID feature network (trained once and cached; checked, or the resumed sweep's own)."""
    from trainables.datasets import load_dataset
    from trainables.feature_checks import checked_feature_network
    from trainables.features import feature_network
    from trainables.models import get_family

    spec = plan.spec
    data = load_dataset(spec.dataset, spec.data_root, spec.subset, spec.data_options)
    val = "" if data.val_x is None else f"{len(data.val_x)} validation (what trials are scored on) / "
    log.info(f"dataset {data.name}: {len(data.train_x)} training / {val}{len(data.test_x)} held-out images "
             f"of shape {data.shape} from {data.source}; split {data.split}")
    family = get_family(spec.model)
    family.check_data(data.info())
    check_hyperparameters(family, data, spec)  # e.g. --set normal_class=12 fails here
    where = {"data_root": spec.data_root, "data_options": spec.data_options, "subset": spec.subset}
    if plan.resume and spec.feature_network:  # the space its trials were scored in: not chosen or checked again
        saved = spec.feature_network
        feature_state, meta = feature_network(saved.get("kind") or spec.fid_features, data, log=log.info, **where)
        spec.feature_network = {**meta, **{k: saved[k] for k in ("check",) if k in saved}}
    else:
        feature_state, spec.feature_network = checked_feature_network(spec.fid_features, data, spec.eval_samples,
                                                                      log=log.info, check=spec.feature_check, **where)
    spec.dataset_info = {**data.info(), "options": spec.data_options or {}}  # checkpoints keep the options
    return data, feature_state


def start_live_dashboard(plan: SweepPlan):
    """The dashboard while the sweep runs (dashboards.live): its first page now, its path said
    before the trials start; None where it is off."""
    if not plan.run.live_dashboard:
        return None
    from dashboards.live import LiveDashboard
    from dashboards.page import LiveState

    spec = plan.spec  # the final phase's trials: at most the top ones, and the defaults under --final-halving
    finals = spec.final_top + bool(spec.final_halving and spec.baseline) if has_final_phase(spec) else 0
    live = LiveDashboard(plan.exp.uri, LiveState(plan.spec.trials + finals), plan.run.dashboard_every)
    out = live.start()
    if out:
        log.info(f"dashboard: {out} (rebuilt as the sweep runs; the page reloads itself)")
    return live


def rescore_winners(exp: Location, run: RunOptions, sweep_seconds: float, cpus: int) -> None:
    """The sweep's end: its best checkpoints re-scored over seeds (orchestrator.rescore), said with
    its cost before it starts; by default scaled to a share of the sweep's own time. Where that
    fails, one line says so and the sweep's own results stand."""
    from orchestrator.rescore import RESCORE_SHARE, describe, plan_rescore, rescore

    loaded = load_experiment(exp.uri)
    if not loaded.ranked_checkpoints(rescored=False):
        return  # nothing to re-score: the report says why
    try:
        full_plan = plan_rescore(loaded, run.rescore_top, cpus)
        plan = plan_rescore(loaded, run.rescore_top, cpus, sweep_seconds) if run.rescore_scaled else full_plan
        if plan is None:
            log.info(f"no re-scoring: even the winner's would take more than {RESCORE_SHARE:.0%} of this sweep's "
                     f"{sweep_seconds:.0f} s; python -m orchestrator.rescore {exp} (or --rescore-top K) re-scores "
                     f"anyway")
            return
        if plan != full_plan:
            log.info(f"re-scoring scaled to {RESCORE_SHARE:.0%} of the sweep's {sweep_seconds:.0f} s: "
                     f"{plan.describe()} (in full: {full_plan.describe()}; --rescore-top K re-scores in full)")
        report = rescore(loaded, plan.top, plan.seeds, plan.samples, log=log.info, seconds=plan.seconds)
        logging.getLogger("orchestrator.report").info(describe(report))
    except Exception as e:
        log.warning(f"warning: re-scoring failed ({type(e).__name__}: {first_line(e)}); the ranking is the sweep's "
                    f"own; try again with: python -m orchestrator.rescore {exp}")
