"""What a sweep's driver writes into its experiment besides Tune's own files: its status (for the
readers' trial statuses), each trial's whole history once Tune is done, and the histories set
aside before `--resume` restarts unfinished trials.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from trainables.experiment import load_experiment
from trainables.layout import PROGRESS_FILE, RESULT_FILE, RESUME_BACKUP, SWEEP_STATUS
from trainables.storage import Location
from trainables.trials import Experiment


def write_sweep_status(exp: Location, status: str) -> None:
    """The driver's status (running, interrupted, finished), for the readers' trial statuses."""
    exp_status = {"status": status, "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    (exp / SWEEP_STATUS).write_text(json.dumps(exp_status))


def write_histories(exp: Experiment) -> None:
    """Each trial's result.json and progress.csv, rewritten with its whole history where Tune's hold
    only part of it: Tune starts both anew when `--resume` restarts a trial (the earlier runs' reports
    are in result-before-resume-*.json), and a checkpoint written as the sweep stopped has no report.
    Run by the sweep's driver once Tune is done, so nothing else writes them meanwhile."""
    import pandas as pd

    def logged_steps(logged: Path, progress: Path) -> tuple[list, list]:
        """The steps in Tune's result.json and progress.csv, in file order ([] for a missing or
        unreadable file). Steps, not row counts: a killed and resumed run's progress.csv can miss
        one report and repeat another, and still hold as many rows as the history."""
        try:
            in_json = [json.loads(line).get("step") for line in logged.read_text().splitlines() if line.strip()]
        except (OSError, ValueError, AttributeError):
            in_json = []
        try:
            with progress.open() as table:
                in_csv = pd.read_csv(table)["step"].tolist()
        except (OSError, ValueError, KeyError):
            in_csv = []
        return in_json, in_csv

    for trial in exp.trials:
        logged = trial.path / RESULT_FILE
        history = [row.get("step") for row in trial.results]
        # both files: a sweep killed between Tune's JSON and CSV loggers has a report in one only
        if not trial.results or logged_steps(logged, trial.path / PROGRESS_FILE) == (history, history):
            continue
        exp.where(logged).write_text("".join(json.dumps(row) + "\n" for row in trial.results))
        table = pd.json_normalize([{k: v for k, v in row.items() if k != "config"} for row in trial.results], sep="/")
        exp.where(trial.path / PROGRESS_FILE).write_text(table.to_csv(index=False))


def keep_results_before_resume(exp: Location) -> None:
    """Before Tune restarts unfinished trials and rewrites their result.json, each trial's history
    so far is set aside (result-before-resume-*.json). It includes the reports of checkpoints that
    a stopped sweep wrote but never logged: the resumed trial goes on from such a checkpoint, which
    may be pruned later, and its report would be lost with it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    loaded = load_experiment(exp.uri)
    for trial in loaded.trials:
        if trial.results:
            backup = loaded.where(trial.path / f"{RESUME_BACKUP}{stamp}.json")
            backup.write_text("".join(json.dumps(row) + "\n" for row in trial.results))
