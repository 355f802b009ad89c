"""A Tune callback that keeps a trial's reports when Tune restarts the trial from a checkpoint."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ray.tune import Callback

from orchestrator.experiment import RESTART_BACKUP  # read back by read_results


class KeepResultsOnRestart(Callback):
    """When Tune starts a trial again from one of its checkpoints (PBT's exploit, a recovered
    failure), its JSON logger first copies the stored result.json over the trial's local one. The
    stored copy is only as fresh as Tune's last sync to the experiment folder, often empty early in
    a sweep, so the trial's reports so far were lost (seen with PBT on 2 trials). This callback
    runs before the logger (user callbacks come first) and copies them aside."""

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        path = Path(trial.local_path) / "result.json"
        if path.is_file() and path.stat().st_size:
            shutil.copyfile(path, path.with_name(f"{RESTART_BACKUP}{time.time_ns()}.json"))
