"""Reading an experiment directory: the sweep's spec, each trial's reports, status and checkpoints
(load_experiment, into trainables.trials' Experiment), and the leaderboard table of one.

Reads files only (no Ray, nothing unpickled: Tune's state is read from its JSON files), so it
works on a copy pulled from remote storage and while a sweep is still running. `best`, the
sweep's leaderboard and the dashboard all read through this.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from trainables.errors import BadInput
from trainables.layout import (CHECKPOINT_PREFIX, CHECKPOINTS_DIR, DIVERGED, ERROR_FILE, FINAL_DIR, METRICS, PARAMS_FILE,
                               RESCORE_FILE, RESTART_BACKUP, RESULT_FILE, RESUME_BACKUP, SPEC_FILE, SWEEP_STATUS, WARM_START_FILE,
                               TRIAL_ID)
from trainables.settings import FinalStart
from trainables.storage import is_complete, local_copy, location
from trainables.trials import CheckpointInfo, Experiment, Trial, as_step


class NotAnExperiment(BadInput):
    """A path or URI that holds no experiment of this project (one line, exit 2 in every CLI)."""


def read_results(folder: Path) -> list[dict]:
    """A trial's reports by step. Tune rewrites result.json when a resumed trial restarts, so
    `--resume` keeps the earlier runs' files (result-before-resume-*.json), as the sweep does when
    Tune restarts a trial from a checkpoint (result-before-restart-*.json); later runs win a step."""
    by_step: dict[int, dict] = {}
    backups = sorted([*folder.glob(f"{RESUME_BACKUP}*.json"), *folder.glob(f"{RESTART_BACKUP}*.json")],
                     key=lambda p: (p.stat().st_mtime, p.name))
    for path in backups + [folder / RESULT_FILE]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                break  # a line being written right now
            if isinstance(row, dict):
                by_step[as_step(row.get("step"), len(by_step))] = row
    return [by_step[step] for step in sorted(by_step)]


def with_checkpoint_reports(results: list[dict], checkpoints: list[CheckpointInfo]) -> list[dict]:
    """A trial's reports, with those of its checkpoints that Tune never logged (a checkpoint written
    in the seconds after Ctrl-C, whose report the stopping sweep no longer took): every checkpoint on
    disk is then in the trial's history, the leaderboard and the curves."""
    steps = {as_step(r.get("step"), -1) for r in results}
    extra = [c.metrics for c in checkpoints if c.step >= 0 and c.step not in steps]
    if not extra:
        return results
    return sorted([*results, *extra], key=lambda r: as_step(r.get("step"), 0))


def read_tune_state(path: Path) -> tuple[dict[str, dict], dict]:
    """Trial status from Tune's experiment_state-*.json files (JSON only; their pickled fields are
    left alone). Later files (a resumed sweep) win. Returns ({trial_id: Tune's status}, runner data)."""
    trials: dict[str, str] = {}
    runner: dict = {}
    for state_file in sorted(path.glob("experiment_state-*.json")):
        try:
            state = json.loads(state_file.read_text())
            entries = state.get("trial_data", [])
        except (OSError, ValueError, AttributeError):
            continue  # being written right now, or not Tune's
        for entry in entries:
            try:
                trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
                trials[trial["trial_id"]] = trial.get("status")
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                continue
        data = state.get("runner_data")
        if isinstance(data, dict):
            runner = {k: data[k] for k in ("_total_time", "_start_time", "_session_str", "_resumed") if k in data}
    return trials, runner


def is_spec(spec) -> bool:
    """Whether a parsed sweep.json has what reading an experiment relies on."""
    return (isinstance(spec, dict) and isinstance(spec.get("objective"), str) and spec.get("mode") in ("min", "max")
            and as_step(spec.get("max_steps"), -1) >= 1)


def load_experiment(path: str | Path) -> Experiment:
    """An experiment from its folder or its URI (s3://...: read from a local mirror of its small
    files, see trainables.storage.pull)."""
    path, source = local_copy(path)
    spec_path = path / SPEC_FILE
    if not spec_path.is_file():
        raise NotAnExperiment(f"{source} is not an experiment directory ({SPEC_FILE} is missing)")
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as e:
        raise NotAnExperiment(f"{spec_path} is not readable JSON ({e})") from None
    if not is_spec(spec):
        raise NotAnExperiment(f"{spec_path} does not describe a sweep (objective, mode, max_steps); "
                         f"is {path} an experiment of this project?")
    tune_trials, runner = read_tune_state(path)
    tune_trials.update(read_tune_state(path / FINAL_DIR)[0])
    trials = []
    for params_file in sorted([*path.glob(f"*/{PARAMS_FILE}"), *path.glob(f"{FINAL_DIR}/*/{PARAMS_FILE}")]):
        folder = params_file.parent
        match = TRIAL_ID.search(folder.name)
        if not match:
            continue
        trial_id = match.group(1)
        error_file = folder / ERROR_FILE
        error = None
        # Tune leaves error.txt behind when it restarts a failed trial (--max-failures): only an
        # ERROR state (or no state to ask) makes the trial errored
        if error_file.is_file() and tune_trials.get(trial_id) in (None, "ERROR"):
            lines = error_file.read_text(errors="replace").strip().splitlines()
            error = lines[-1] if lines else "error (empty error.txt)"
        try:
            params = json.loads(params_file.read_text())
        except ValueError:
            params = {}
        params = dict(params) if isinstance(params, dict) else {}
        params, final = FinalStart.split(params)
        checkpoints = []
        for metrics_file in sorted((path / CHECKPOINTS_DIR / trial_id).glob(f"{CHECKPOINT_PREFIX}*/{METRICS}")):
            if not is_complete(location(metrics_file.parent)):
                continue  # being written, or its writer died: not a checkpoint yet (trainables.storage)
            try:
                metrics = json.loads(metrics_file.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(metrics, dict):
                checkpoints.append(CheckpointInfo(metrics_file.parent, metrics))
        results = with_checkpoint_reports(read_results(folder), checkpoints)
        if error is None and results and results[-1].get(DIVERGED):
            error = f"diverged: {results[-1][DIVERGED]}"
        trials.append(Trial(trial_id, folder, params, results, error, sorted(checkpoints, key=lambda c: c.step),
                            tune_trials.get(trial_id), final.checkpoint if final else None,
                            final.until if final else None))
    return Experiment(path, spec, trials, source, runner, read_json_dict(path / SWEEP_STATUS),
                      read_json_dict(path / RESCORE_FILE), read_json_dict(path / WARM_START_FILE))


def read_json_dict(path: Path) -> dict:
    """A JSON object from a file; {} where it is missing, damaged or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def leaderboard(exp: Experiment, now: float | None = None):
    """One row per trial, best first: hyperparameters, best objective (of a trained model), the
    untrained model's reading beside it as a reference (where the family scores one), status, best
    checkpoint; for a Pareto sweep also the cost and the trial's place on the front ("front", or "knee")."""
    import pandas as pd

    best_ckpt = exp.best_checkpoints()
    statuses = exp.statuses(now)
    roles = exp.roles()
    places = exp.pareto_places()
    rows = []
    references = {t.trial_id: exp.untrained_of(t) for t in exp.trials}
    for t in exp.trials:
        best = exp.best_of(t) or {}
        ckpt = best_ckpt.get(t.trial_id)
        cost = {exp.cost: best.get(exp.cost, math.nan), "pareto": places.get(t.trial_id, "")} if exp.cost else {}
        untrained = references[t.trial_id] or {}  # the column wherever some trial has the reading (a final trial has none)
        reference = {"untrained": untrained.get(exp.objective, math.nan)} if any(references.values()) else {}
        rows.append({"trial": t.trial_id, **exp.params_at_best(t), exp.objective: best.get(exp.objective, math.nan),
                     **reference, **cost, "at_step": best.get("step"), "steps": t.last_step,
                     "status": statuses[t.trial_id], "seconds": round(t.wall_seconds, 1),
                     "checkpoint": str(ckpt.path) if ckpt else "",
                     **({"role": roles.get(t.trial_id, "")} if roles else {})})
    table = pd.DataFrame(rows)
    if len(table):
        ascending = exp.mode == "min"
        table = table.sort_values(exp.objective, ascending=ascending, na_position="last").reset_index(drop=True)
        table.index += 1
    return table
