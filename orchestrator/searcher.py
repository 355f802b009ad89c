"""The sweep's searcher: Ray Tune's OptunaSearch, taught what a diverged trial means, and where
its Optuna study lives (the experiment's optuna.db, also on remote storage)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import tempfile
from pathlib import Path

from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from trainables.loop import DIVERGED
from trainables.storage import Location, cache_root


class DivergedIsPruned(OptunaSearch):
    """A trial that diverged (its last result has trainables.loop.DIVERGED) is told to Optuna as
    PRUNED. Told as it ended, with its best score so far, it would look good; told as failed,
    Optuna's TPE would ignore it and sample near it again. TPE ranks pruned trials below every
    complete one, so it learns that region is bad."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and result.get(DIVERGED) and trial_id not in self._completed_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


STUDY_FILE = "optuna.db"  # STORAGE/NAME/optuna.db: optuna-dashboard and the dashboard's importance read it


def study_copy(exp: Location) -> Path:
    """The driver's working copy of a remote experiment's study (SQLite can't be opened on an
    object store): one fixed place per experiment URI, where a restored searcher looks again."""
    digest = hashlib.sha1(exp.uri.encode()).hexdigest()[:16]
    return cache_root() / "studies" / digest / STUDY_FILE


def study_storage(exp: Location, resume: bool) -> str:
    """The SQLite URL of the experiment's Optuna study: the file in the experiment folder on a
    local disk; for remote storage, a working copy on this machine (fetched from the experiment
    when resuming, replaced by an empty study otherwise), uploaded by UploadStudy."""
    if not exp.remote:
        return f"sqlite:///{exp.local / STUDY_FILE}"
    copy = study_copy(exp)
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.unlink(missing_ok=True)
    stored = exp / STUDY_FILE
    if resume and stored.is_file():
        copy.write_bytes(stored.read_bytes())
    return f"sqlite:///{copy}"


def upload_study(exp: Location) -> None:
    """A consistent snapshot of the working copy (SQLite's backup API), uploaded whole."""
    copy = study_copy(exp)
    if not copy.is_file():
        return
    with tempfile.TemporaryDirectory(prefix="study-") as tmp:
        snapshot = Path(tmp) / STUDY_FILE
        with contextlib.closing(sqlite3.connect(copy)) as source, contextlib.closing(sqlite3.connect(snapshot)) as out:
            source.backup(out)
        (exp / STUDY_FILE).write_bytes(snapshot.read_bytes())


class UploadStudy(Callback):
    """Uploads a remote experiment's study as each trial ends, when the sweep ends, and whenever
    Tune saves its experiment state (get_state runs right after the searcher's state is saved and
    before both go up): the bucket's study then always holds every trial that the searcher state
    a `--resume` restores refers to, and a killed driver loses at most the last trial's update."""

    def __init__(self, exp: Location):
        self.exp = exp

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        upload_study(self.exp)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        upload_study(self.exp)

    def on_experiment_end(self, trials: list, **info) -> None:
        upload_study(self.exp)

    def get_state(self) -> None:
        upload_study(self.exp)
        return None
