"""The sweep's Tune callbacks: a trial's reports kept when Tune restarts it from a checkpoint, and
the sweep stopped (resumably) when its storage is full. (The module keeps its first name:
experiments' pickled tuner.pkl refer to it, and `--resume` unpickles them.)"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from ray.tune import Callback

from trainables.layout import RESTART_BACKUP, RESULT_FILE, STORAGE_FULL


class KeepResultsOnRestart(Callback):
    """When Tune starts a trial again from one of its checkpoints (PBT's exploit, a recovered
    failure), its JSON logger first copies the stored result.json over the trial's local one. The
    stored copy is only as fresh as Tune's last sync to the experiment folder, often empty early in
    a sweep, so the trial's reports so far were lost (seen with PBT on 2 trials). This callback
    runs before the logger (user callbacks come first) and copies them aside."""

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        path = Path(trial.local_path) / RESULT_FILE
        if path.is_file() and path.stat().st_size:
            shutil.copyfile(path, path.with_name(f"{RESTART_BACKUP}{time.time_ns()}.json"))


class StopWhenStorageFull(Callback):
    """A trial whose checkpoint did not fit its storage reports trainables.layout.STORAGE_FULL and
    waits. Then every trial is stopped as Ctrl-C stops them: Tune saves its state and leaves them
    unfinished, so `--resume` continues each from its last complete checkpoint once there is
    space (stopping them as finished would lose that). Tune's own interrupt is SIGUSR1 to this
    process (ray/tune/tune.py's signal handler; checked on Ray 2.60)."""

    def __init__(self):
        self.stopping = False

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:

        if result.get(STORAGE_FULL) and not self.stopping:
            self.stopping = True
            print(f"[sweep] {result[STORAGE_FULL]}; stopping every trial", flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)
