"""Where the sweep's Optuna study lives: the experiment's optuna.db, on remote storage a working
copy uploaded as trials end. (The searcher, DivergedIsPruned, is in orchestrator.tune_plugins with
the sweep's other Tune plug-ins; it is imported here too, where the oldest pickled experiments find it.)"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import sys
import tempfile
from pathlib import Path

import optuna
from ray.tune import Callback

from orchestrator.tune_plugins import DivergedIsPruned
from trainables.layout import STUDY_FILE
from trainables.storage import Location, cache_root, first_line, location

__all__ = ["DivergedIsPruned", "StudyStorage", "UploadStudy", "fetch_study", "study_copy", "study_url", "upload_study",
           "warm_start"]
WARM_START_ATTR = "warm_start_from"  # the user attribute of a seeded trial: EXPERIMENT/TRIAL_ID


def study_copy(exp: Location) -> Path:
    """The driver's working copy of a remote experiment's study (SQLite can't be opened on an
    object store): one fixed place per experiment URI, where a restored searcher looks again."""
    digest = hashlib.sha1(exp.uri.encode()).hexdigest()[:16]
    return cache_root() / "studies" / digest / STUDY_FILE


def study_url(exp: Location) -> str:
    """The SQLite URL of the experiment's Optuna study: the file in the experiment folder on a
    local disk; for remote storage, the working copy on this machine (see fetch_study)."""
    return f"sqlite:///{exp.local / STUDY_FILE if not exp.remote else study_copy(exp)}"


class StudyStorage(optuna.storages.RDBStorage):
    """The SQLite storage of an experiment's study, pickled as the experiment's URI only. Tune
    pickles the searcher (tuner.pkl, its searcher state) and `--resume` unpickles it, maybe on
    another machine, or with another home or cache folder: there it opens the study where this
    machine keeps it, not at the address the first driver used."""

    def __init__(self, experiment: str):
        self.experiment = experiment
        url = study_url(location(experiment))
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(url)

    def __reduce__(self):
        return StudyStorage, (self.experiment,)


def fetch_study(exp: Location, resume: bool) -> None:
    """Make a remote experiment's working copy: the bucket's study when resuming (the copy already
    here stays if the bucket has none), else none (a new sweep starts an empty study)."""
    if not exp.remote:
        return
    copy, stored = study_copy(exp), exp / STUDY_FILE
    copy.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        copy.unlink(missing_ok=True)
    elif stored.is_file():
        copy.write_bytes(stored.read_bytes())


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

    def upload(self) -> None:
        """A failed upload (the store briefly away, a quota) is said in one line and tried again at
        the next event: it must not fail a trial or the sweep."""
        try:
            upload_study(self.exp)
        except (OSError, sqlite3.Error) as e:
            print(f"[sweep] warning: the Optuna study was not uploaded to {self.exp}/{STUDY_FILE} "
                  f"({first_line(e)}); trying again when the next trial ends", file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.upload()

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.upload()

    def on_experiment_end(self, trials: list, **info) -> None:
        self.upload()

    def get_state(self) -> None:
        self.upload()
        return None


def warm_start(storage: optuna.storages.BaseStorage, study_name: str, mode: str, param_space: dict,
               experiments: list, defaults: dict) -> tuple[int, int]:
    """Seed a new sweep's study with earlier experiments' scored search trials (Optuna's
    add_trial, each marked with WARM_START_ATTR), before the searcher opens it. A trial's value is
    its best objective, as the earlier study recorded it. Only the new space's searched
    hyperparameters are kept (one the new space fixes is fixed); one the trial lacks takes the
    family's default (`defaults`: a hyperparameter added since, e.g. diffaug, whose default is
    what the trial did), and a trial with one outside its new distribution is dropped. Returns
    (seeded, dropped)."""
    from ray.tune.search.optuna import OptunaSearch

    distributions = OptunaSearch.convert_search_space(param_space)
    study = optuna.create_study(storage=storage, study_name=study_name,
                                direction="minimize" if mode == "min" else "maximize")
    seeded = dropped = 0
    for exp in experiments:
        for trial in exp.search_trials:
            best = exp.best_of(trial)
            if best is None:
                continue  # no score to learn from (errored, or stopped before its first evaluation)
            params = {**defaults, **exp.params_at_best(trial)}
            try:
                study.add_trial(optuna.trial.create_trial(
                    params={name: params[name] for name in distributions}, distributions=distributions,
                    value=best[exp.objective],
                    user_attrs={WARM_START_ATTR: f"{exp.spec.get('name', exp.path.name)}/{trial.trial_id}"}))
            except (KeyError, ValueError):  # outside the new space (or not the family's at all)
                dropped += 1
                continue
            seeded += 1
    return seeded, dropped
