"""The sweep's closing report: the leaderboard, the final phase, the Pareto front, the best
checkpoint and the dashboard; and the exit code, which tells the truth."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from trainables.experiment import leaderboard, load_experiment
from trainables.experiment_writers import write_histories, write_sweep_status
from trainables.layout import DASHBOARD_FILE, ERROR_FILE, STORAGE_FULL
from trainables.storage import Location
from trainables.trials import Experiment

log = logging.getLogger("orchestrator.report")
say = log.info


@dataclass
class Report:
    code: int  # the sweep's exit code
    experiment: Experiment  # as read at the end
    dashboard: Path | None  # the page written, if any


UNFINISHED = ("PENDING", "RUNNING", "PAUSED")  # Tune's statuses of trials a stopped sweep left


def report(where: Location, elapsed: float, dashboard: bool, resume: str, stopped: bool = False) -> Report:
    """The leaderboard, the best checkpoint and the dashboard (uploaded too, for remote storage).
    The exit code tells the truth: 1 unless some trial wrote a checkpoint and not every trial
    errored, with one line on stderr saying how many errored and where their error.txt files are;
    130 (as for Ctrl-C) when the sweep was interrupted, with the command that continues it. Said
    through logging: plain lines of the logger orchestrator.report, errors as warnings."""
    import pandas as pd

    exp = load_experiment(where.uri)  # a remote experiment is read from its local mirror
    unfinished = [t for t in exp.trials if t.tune_status in UNFINISHED]
    exp.sweep_status = {"status": "interrupted" if stopped or unfinished else "finished"}
    write_sweep_status(where, exp.sweep_status["status"])
    write_histories(exp)
    full = sorted({t.results[-1][STORAGE_FULL] for t in exp.trials if t.results and t.results[-1].get(STORAGE_FULL)}
                  | {t.error for t in exp.trials if t.error and "No space left" in t.error})
    table, page = leaderboard(exp), None
    say(f"\nexperiment: {where}  ({elapsed:.0f} s)")
    if len(table):
        columns = [c for c in table.columns if c != "checkpoint"]
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
            say(table[columns].to_string())
    if dashboard and not full:
        from dashboards.build import build

        page = build([exp])  # as loaded above: a remote experiment is not mirrored twice
        say(f"dashboard: {page}" + (f" (and {where}/{DASHBOARD_FILE})" if where.remote else ""))
    ranked = exp.ranked_checkpoints()
    for trial in (t for t in exp.trials if t.final_from):  # what the final phase made of its configurations
        parent = next((t for t in exp.trials if t.trial_id == trial.parent), None)
        before, after = (exp.best_of(t) or {} for t in (parent, trial)) if parent else ({}, exp.best_of(trial) or {})
        say(f"final phase: trial {trial.trial_id} trained trial {trial.parent}'s configuration on to step "
              f"{trial.last_step}: {exp.objective} {before.get(exp.objective, math.nan):.4g} -> "
              f"{after.get(exp.objective, math.nan):.4g}")
    front = exp.pareto_front()
    if front:
        knee = exp.knee(front)
        say(f"Pareto front of {exp.objective} vs {exp.cost}, cheapest first ({len(front)} of {len(exp.trials)} "
              f"trials): " + "; ".join(f"trial {t.trial_id} {c.metrics[exp.objective]:.4g} at {c.metrics[exp.cost]:.4g}"
                                       + (" (knee)" if i == knee else "") for i, (t, c) in enumerate(front)))
        say(f"export the front: python -m orchestrator.best {where} --pareto")
    if ranked:
        trial, ckpt = ranked[0]
        say(f"best checkpoint: {exp.where(ckpt.path)}  ({exp.objective} {ckpt.metrics[exp.objective]:.4g} "
              f"at step {ckpt.step}, trial {trial.trial_id}" + (f", {exp.feature_space} features" if exp.feature_space else "")
              + (", ranked by the re-scored mean" if exp.rescored_entries() else "") + ")")
        if where.remote:
            say(f"pull it: python -m orchestrator.best {where} --top 3")
    if full:  # nothing more is written there; the experiment is whole up to each trial's last checkpoint
        log.warning(f"{full[0]} (the sweep stopped; each trial continues from its last complete checkpoint: {resume})")
        return Report(1, exp, page)
    statuses = exp.statuses()
    errored = [t for t in exp.trials if statuses[t.trial_id] == "errored"]
    if errored:
        files = [str(exp.where(t.path / ERROR_FILE)) for t in errored if (t.path / ERROR_FILE).is_file()]
        log.warning(f"{len(errored)} of {len(exp.trials)} trials errored" + (f"; see {', '.join(files)}" if files else
                    " (diverged; see the leaderboard)"))
    if exp.sweep_status["status"] == "interrupted":
        log.warning(f"interrupted: {len(unfinished)} of {len(exp.trials)} trials unfinished; continue the sweep "
                    f"with: {resume}")
        return Report(130, exp, page)
    if not ranked:
        log.warning("no checkpoint was written (every trial failed or stopped before its first evaluation)")
    return Report(0 if ranked and len(errored) < len(exp.trials) else 1, exp, page)
