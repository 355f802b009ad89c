"""The sweep's searcher: Ray Tune's OptunaSearch, taught what a diverged trial means."""

from __future__ import annotations

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from trainables.loop import DIVERGED


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
