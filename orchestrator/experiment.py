"""Reading an experiment directory: the sweep's spec, each trial's reports and its checkpoints.

Reads files only (no Ray), so it works on a copy pulled from remote storage and while a sweep
is still running. `best`, the sweep's leaderboard and the dashboard all read through this.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.cli import UsageError

SPEC_FILE = "sweep.json"
RESUME_BACKUP = "result-before-resume-"
TRIAL_ID = re.compile(r"^run_trial_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_")  # Tune's trial directory names


@dataclass
class CheckpointInfo:
    path: Path
    metrics: dict

    @property
    def step(self) -> int:
        return int(self.metrics.get("step", -1))


@dataclass
class Trial:
    trial_id: str
    path: Path
    params: dict
    results: list[dict]
    error: str | None
    checkpoints: list[CheckpointInfo] = field(default_factory=list)

    def status(self, max_steps: int) -> str:
        if self.error:
            return "errored"
        if not self.results:
            return "pending"
        return "finished" if self.last_step >= max_steps else "stopped early"

    @property
    def last_step(self) -> int:
        return int(self.results[-1].get("step", 0)) if self.results else 0

    @property
    def wall_seconds(self) -> float:
        """Seconds between reports, summed over every run of the trial (resumes included)."""
        return float(sum(r.get("time_this_iter_s", 0.0) for r in self.results))


@dataclass
class Experiment:
    path: Path
    spec: dict
    trials: list[Trial]

    @property
    def objective(self) -> str:
        return self.spec["objective"]

    @property
    def mode(self) -> str:
        return self.spec["mode"]

    def score(self, metrics: dict) -> float:
        """Sort key: smaller is better whatever the mode; missing or NaN scores sort last."""
        value = metrics.get(self.objective)
        if not isinstance(value, (int, float)) or math.isnan(value):
            return math.inf
        return value if self.mode == "min" else -value

    def best_of(self, trial: Trial) -> dict | None:
        scored = [r for r in trial.results if math.isfinite(self.score(r))]
        return min(scored, key=self.score) if scored else None

    def ranked_checkpoints(self) -> list[tuple[Trial, CheckpointInfo]]:
        pairs = [(t, c) for t in self.trials for c in t.checkpoints if math.isfinite(self.score(c.metrics))]
        return sorted(pairs, key=lambda tc: self.score(tc[1].metrics))


def read_results(folder: Path) -> list[dict]:
    """A trial's reports by step. Tune rewrites result.json when a resumed trial restarts, so
    `--resume` keeps the earlier runs' files (result-before-resume-*.json); later runs win a step."""
    by_step: dict[int, dict] = {}
    for path in sorted(folder.glob(f"{RESUME_BACKUP}*.json")) + [folder / "result.json"]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                break  # a line being written right now
            by_step[int(row.get("step", len(by_step)))] = row
    return [by_step[step] for step in sorted(by_step)]


def keep_results_before_resume(exp_path: str | Path) -> None:
    """Copy each trial's result.json aside before Tune restarts unfinished trials and rewrites it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in Path(exp_path).glob("run_trial_*/result.json"):
        shutil.copyfile(path, path.with_name(f"{RESUME_BACKUP}{stamp}.json"))


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path).expanduser()
    spec_path = path / SPEC_FILE
    if not spec_path.is_file():
        raise UsageError(f"{path} is not an experiment directory ({SPEC_FILE} is missing)")
    try:
        spec = json.loads(spec_path.read_text())
    except ValueError as e:
        raise UsageError(f"{spec_path} is not readable JSON ({e})") from None
    trials = []
    for params_file in sorted(path.glob("*/params.json")):
        folder = params_file.parent
        match = TRIAL_ID.search(folder.name)
        if not match:
            continue
        trial_id = match.group(1)
        error_file = folder / "error.txt"
        error = error_file.read_text().strip().splitlines()[-1] if error_file.is_file() else None
        try:
            params = json.loads(params_file.read_text())
        except ValueError:
            params = {}
        checkpoints = []
        for metrics_file in sorted((path / "checkpoints" / trial_id).glob("checkpoint_*/metrics.json")):
            try:
                checkpoints.append(CheckpointInfo(metrics_file.parent, json.loads(metrics_file.read_text())))
            except ValueError:
                continue
        trials.append(Trial(trial_id, folder, params, read_results(folder), error,
                            sorted(checkpoints, key=lambda c: c.step)))
    return Experiment(path, spec, trials)


def leaderboard(exp: Experiment):
    """One row per trial, best first: hyperparameters, best objective, status, best checkpoint."""
    import pandas as pd

    best_ckpt = {}
    for trial, ckpt in exp.ranked_checkpoints():
        best_ckpt.setdefault(trial.trial_id, ckpt)
    rows = []
    for t in exp.trials:
        best = exp.best_of(t) or {}
        ckpt = best_ckpt.get(t.trial_id)
        rows.append({"trial": t.trial_id, **t.params, exp.objective: best.get(exp.objective, math.nan),
                     "at_step": best.get("step"), "steps": t.last_step,
                     "status": t.status(exp.spec["max_steps"]), "seconds": round(t.wall_seconds, 1),
                     "checkpoint": str(ckpt.path) if ckpt else ""})
    table = pd.DataFrame(rows)
    if len(table):
        ascending = exp.mode == "min"
        table = table.sort_values(exp.objective, ascending=ascending, na_position="last").reset_index(drop=True)
        table.index += 1
    return table
