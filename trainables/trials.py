"""An experiment as read from its files: its trials (reports, checkpoints, status) and what is
worked out from them (rankings, the baseline trial, statuses, the Pareto front and its knee).

trainables.experiment reads these from an experiment directory; like it, this imports neither
torch nor Ray.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainables.layout import UNTRAINED
from trainables.settings import FinalStart
from trainables.storage import Location, location


LIVE_SECONDS = 600  # an unfinished trial that reported within this long is taken as still running

# What each status means, for the leaderboard and the dashboard's legend.
STATUSES = {
    "finished": "ran to the last step",
    "stopped early": "stopped by the scheduler (ASHA) after a rung",
    "errored": "raised an error (see error.txt in its folder) or diverged (a loss became NaN or infinite)",
    "running": "still training (reported in the last 10 minutes)",
    "interrupted": "unfinished when the sweep's driver stopped; `--resume` continues it",
    "pending": "not started yet",
}


@dataclass
class CheckpointInfo:
    path: Path
    metrics: dict

    @property
    def step(self) -> int:
        return as_step(self.metrics.get("step"), -1)


@dataclass
class Trial:
    trial_id: str
    path: Path
    params: dict
    results: list[dict]
    error: str | None
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    tune_status: str | None = None  # Tune's own: PENDING, RUNNING, PAUSED, TERMINATED, ERROR (None: no state file)
    final_from: str | None = None  # a final trial's: the checkpoint it continued from
    final_until: int | None = None  # and the step it trains to

    @property
    def parent(self) -> str | None:
        """The trial a final trial continued (its checkpoint is CHECKPOINTS_DIR/<trial_id>/...)."""
        return Path(self.final_from).parent.name if self.final_from else None

    def status(self, max_steps: int, now: float | None = None, sweep: str | None = None) -> str:
        """One of STATUSES. From Tune's state when the experiment has it, else from the files;
        `sweep` is the driver's own status (SWEEP_STATUS), where it wrote one: an unfinished trial
        of a sweep that is no longer running was interrupted, however recently it reported."""
        if self.error or self.tune_status == "ERROR":
            return "errored"
        if self.last_step >= (self.final_until or max_steps):
            return "finished"
        if self.tune_status == "TERMINATED":
            return "stopped early"  # Tune ended it before the last step: its scheduler did
        if not self.results:
            return "pending"
        if sweep in ("interrupted", "finished"):
            return "interrupted"
        if self.tune_status is None:
            return "stopped early"  # no Tune state to tell a scheduler's stop from an interrupted driver
        last = float(self.results[-1].get("timestamp", 0) or 0)
        return "running" if (now or time.time()) - last < LIVE_SECONDS else "interrupted"

    @property
    def last_step(self) -> int:
        return as_step(self.results[-1].get("step"), 0) if self.results else 0

    @property
    def wall_seconds(self) -> float:
        """Seconds between reports, summed over every run of the trial (resumes included)."""
        return float(sum(_number(r.get("time_this_iter_s")) or 0.0 for r in self.results))

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one reported metric, only where it is a finite number."""
        steps, values = [], []
        for row in self.results:
            value = _number(row.get(key))
            if value is not None:
                steps.append(as_step(row.get("step"), len(steps)))
                values.append(value)
        return steps, values


@dataclass
class Experiment:
    path: Path
    spec: dict
    trials: list[Trial]
    source: Location  # where the experiment really is: `path` is its local mirror when that is remote
    tune_state: dict = field(default_factory=dict)  # runner data of Tune's latest experiment_state-*.json
    sweep_status: dict = field(default_factory=dict)  # SWEEP_STATUS, where the driver wrote it
    rescore: dict = field(default_factory=dict)  # RESCORE_FILE, where orchestrator.rescore wrote one
    warm_start: dict = field(default_factory=dict)  # WARM_START_FILE, where the sweep was warm-started

    @property
    def remote(self) -> bool:
        return self.source.remote

    def where(self, local: Path) -> Location:
        """Where a file or folder of this experiment really is (remote, for a mirrored one)."""
        if not self.remote:
            return location(local)
        return self.source / local.relative_to(self.path).as_posix()

    @property
    def objective(self) -> str:
        return self.spec["objective"]

    @property
    def mode(self) -> str:
        return self.spec["mode"]

    @property
    def feature_space(self) -> str | None:
        """The feature network the objective was measured in (FID/KID objectives), for every output to name."""
        name = (self.spec.get("feature_network") or {}).get("name")
        return name if self.objective in ("fid", "kid") and isinstance(name, str) else None

    def score(self, metrics: dict) -> float:
        """Sort key: smaller is better whatever the mode; missing or NaN scores sort last."""
        value = _number(metrics.get(self.objective))
        if value is None:
            return math.inf
        return value if self.mode == "min" else -value

    def best_of(self, trial: Trial) -> dict | None:
        """A trial's best report of a trained model (the untrained model's step-0 reading is a
        reference, not a result: see untrained_of)."""
        scored = [r for r in trial.results if math.isfinite(self.score(r)) and not is_untrained(r)]
        return min(scored, key=self.score) if scored else None

    def untrained_of(self, trial: Trial) -> dict | None:
        """The trial's report of its untrained model (step 0), where it has one: the reference its
        training should beat."""
        return next((r for r in trial.results if is_untrained(r)), None)

    def params_at_best(self, trial: Trial) -> dict:
        """The hyperparameters behind a trial's best report: its config then (Population Based
        Training mutates them during a trial), else the ones it started with."""
        config = (self.best_of(trial) or {}).get("config")
        if not isinstance(config, dict):
            return trial.params
        return {**trial.params, **FinalStart.split(config)[0]}

    @property
    def baseline_trial(self) -> str | None:
        """The id of the trial that trained the family's defaults (sweep.json's `baseline`, tried
        first), or None: the sweep's own baseline, for the leaderboard and the dashboard."""
        baseline = self.spec.get("baseline")
        if not isinstance(baseline, dict) or not baseline:
            return None
        for trial in self.search_trials:
            if all(_same(trial.params.get(k), v) for k, v in baseline.items()):
                return trial.trial_id
        return None

    def roles(self) -> dict[str, str]:
        """What sets a trial apart, by id: "defaults" (the baseline) or "final of <trial>"."""
        roles = {t.trial_id: f"final of {t.parent}" for t in self.trials if t.final_from}
        if self.baseline_trial:
            roles[self.baseline_trial] = "defaults"
        return roles

    @property
    def search_trials(self) -> list[Trial]:
        return [t for t in self.trials if not t.final_from]

    def ranked_checkpoints(self, rescored: bool = True) -> list[tuple[Trial, CheckpointInfo]]:
        """Every kept checkpoint with a finite objective, best first. Where rescore.json has
        re-scored some, those come first, by their re-scored mean; the rest follow by the sweep's
        own single reading (`rescored=False`: all of them by that reading)."""
        pairs = sorted([(t, c) for t in self.trials for c in t.checkpoints if math.isfinite(self.score(c.metrics))],
                       key=lambda tc: self.score(tc[1].metrics))
        order = self.rescored_order() if rescored else {}
        if not order:
            return pairs
        place = {c.path.relative_to(self.path).as_posix(): (t, c) for t, c in pairs}
        first = [place[name] for name in order if name in place]
        return first + [(t, c) for t, c in pairs if c.path.relative_to(self.path).as_posix() not in order]

    def rescored_entries(self) -> list[dict]:
        """rescore.json's checkpoints, best first, each naming its checkpoint (a path relative to
        the experiment); empty when there is none, or it scored another objective."""
        entries = self.rescore.get("checkpoints") if self.rescore.get("metric") == self.objective else None
        if not isinstance(entries, list):
            return []
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("checkpoint"), str)]

    def rescored_order(self) -> dict[str, int]:
        """Each re-scored checkpoint's place in rescore.json's order, by its relative path."""
        return {e["checkpoint"]: i for i, e in enumerate(self.rescored_entries())}

    def best_checkpoints(self) -> dict[str, CheckpointInfo]:
        """Each trial's best kept checkpoint, by trial id."""
        best: dict[str, CheckpointInfo] = {}
        for trial, ckpt in self.ranked_checkpoints():
            best.setdefault(trial.trial_id, ckpt)
        return best

    @property
    def cost(self) -> str | None:
        """The cost metric a Pareto sweep (`--objectives OBJECTIVE,COST`) traded the objective
        against; None for a sweep of one objective."""
        objectives = self.spec.get("objectives")
        return objectives[1] if isinstance(objectives, list) and len(objectives) == 2 else None

    def costed_checkpoints(self) -> list[tuple[Trial, CheckpointInfo]]:
        """A Pareto sweep's trials, each with its best checkpoint by the sweep's own reading where that
        has a cost: the points of its front (the objective and cost from the checkpoint's metrics.json)."""
        best: dict[str, tuple[Trial, CheckpointInfo]] = {}
        for trial, ckpt in self.ranked_checkpoints(rescored=False) if self.cost else []:
            if _number(ckpt.metrics.get(self.cost)) is not None:
                best.setdefault(trial.trial_id, (trial, ckpt))
        return list(best.values())

    def pareto_front(self) -> list[tuple[Trial, CheckpointInfo]]:
        """The trials no other trial beats on both the objective and the cost, cheapest first (each
        with its checkpoint of costed_checkpoints); empty for a sweep of one objective."""
        pairs = self.costed_checkpoints()
        front = [pairs[k] for k in non_dominated([(self.score(c.metrics), float(c.metrics[self.cost])) for _, c in pairs])]
        return sorted(front, key=lambda tc: (float(tc[1].metrics[self.cost]), self.score(tc[1].metrics)))

    def knee(self, front: list[tuple[Trial, CheckpointInfo]]) -> int | None:
        """The index in `front` of its knee: the point nearest the ideal one (the best objective at
        the least cost) once both axes are scaled to the front's range, a common pick of one
        compromise from a front; None for an empty front."""
        if not front:
            return None
        points = [(self.score(c.metrics), float(c.metrics[self.cost])) for _, c in front]
        spans = [(min(axis), (max(axis) - min(axis)) or 1.0) for axis in zip(*points)]
        distance = [math.hypot(*((v - low) / span for v, (low, span) in zip(p, spans))) for p in points]
        return distance.index(min(distance))

    def pareto_places(self) -> dict[str, str]:
        """Each front trial's place, by id: "knee" or "front" (empty for a sweep of one objective)."""
        front = self.pareto_front()
        knee = self.knee(front)
        return {t.trial_id: "knee" if i == knee else "front" for i, (t, _) in enumerate(front)}

    def ranked_trials(self) -> list[Trial]:
        """Trials best first by their best reported objective; trials with none last."""
        return sorted(self.trials, key=lambda t: self.score(self.best_of(t) or {}))

    def statuses(self, now: float | None = None) -> dict[str, str]:
        now = now or time.time()
        sweep = self.sweep_status.get("status")
        return {t.trial_id: t.status(self.spec["max_steps"], now, sweep) for t in self.trials}

    @property
    def compute_seconds(self) -> float:
        """Trial time summed over trials (each trial's time between reports, resumes included)."""
        return sum(t.wall_seconds for t in self.trials)

    @property
    def searched(self) -> list[str]:
        """Hyperparameters that differ between trials (the searched ones), in a stable order."""
        params = [self.params_at_best(t) for t in self.trials]
        keys = sorted({k for p in params for k in p})
        return [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]


def non_dominated(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: as good on both coordinates (smaller is better)
    and better on one. (Optuna's own front, study.best_trials, needs the study; the experiment's
    readers read checkpoints' files.) Equal points are all kept."""
    return [i for i, (a, b) in enumerate(points)
            if not any(x <= a and y <= b and (x < a or y < b) for x, y in points)]


def is_untrained(report: dict) -> bool:
    """Whether a report is the untrained model's (UNTRAINED; a sweep older than that flag marks it
    by its step, 0: the loop evaluates at step 0 only before training)."""
    return bool(report.get(UNTRAINED)) or as_step(report.get("step"), -1) == 0


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def as_step(value, default: int) -> int:
    """A step read from a JSON file: a whole number, else `default` (a damaged or edited file must
    not stop the leaderboard, and never becomes part of a path as anything but digits)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else default
