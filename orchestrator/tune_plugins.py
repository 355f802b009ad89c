"""The sweep driver's own Ray Tune plug-ins: the Optuna searcher that tells diverged trials as
pruned, a trial count that a resume may raise, and the callbacks (reports kept across restarts, a
stop when storage is full, Tune's restore hint hidden; the progress is orchestrator.progress's).

Uses of Tune's private API or undocumented behaviour, each checked on Ray 2.60:
- DivergedIsPruned: OptunaSearch's `_ot_study`, `_ot_trials` and `_completed_trials`;
- StopWhenStorageFull: SIGUSR1 is Tune's own interrupt (ray/tune/tune.py's signal handler);
- KeepResultsOnRestart: user callbacks run before Tune's JSON logger;
- HideTuneRestoreHint: the wording of Tune's log lines after an interrupted run;
- ExtendableSearch: SearchGenerator's `_total_samples` and `_finished`, and that a restored run
  hands the saved state to `set_state` (Tune keeps no public way to raise num_samples on restore);
- FinalHalving: TuneController.stop_trial on a trial other than the one reporting (as Tune's own
  HyperBand does), which tells the scheduler of that trial's end (on_trial_complete).
Tune pickles the searcher and callbacks with a sweep: experiments written by version 0.2 name these
classes in trainables.ray_trial, where `legacy_names` puts them again on --resume (the oldest
find them in orchestrator.searcher and orchestrator.keep_results).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import time
from pathlib import Path

import ray.tune
import ray.tune.stopper
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search.search_generator import SearchGenerator

from orchestrator.progress import SweepProgress, spec_trials
from trainables.layout import DIVERGED, RESTART_BACKUP, RESULT_FILE, STORAGE_FULL
from trainables.settings import FinalStart

log = logging.getLogger("orchestrator.sweep")


class DivergedIsPruned(OptunaSearch):
    """A trial that diverged (its last result has trainables.layout.DIVERGED) is told to Optuna as
    PRUNED. Told as it ended, with its best score so far, it would look good; told as failed,
    Optuna's TPE would ignore it and sample near it again. TPE ranks pruned trials below every
    complete one, so it learns that region is bad."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and result.get(DIVERGED) and trial_id not in self._completed_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


class KeepResultsOnRestart(ray.tune.Callback):
    """When Tune starts a trial again from one of its checkpoints (PBT's exploit, a recovered
    failure), its JSON logger first copies the stored result.json over the trial's local one. The
    stored copy is only as fresh as Tune's last sync to the experiment folder, often empty early in
    a sweep, so the trial's reports so far were lost (seen with PBT on 2 trials). This callback
    runs before the logger (user callbacks come first) and copies them aside."""

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        path = Path(trial.local_path) / RESULT_FILE
        if path.is_file() and path.stat().st_size:
            shutil.copyfile(path, path.with_name(f"{RESTART_BACKUP}{time.time_ns()}.json"))


class StopWhenStorageFull(ray.tune.Callback):
    """A trial whose checkpoint did not fit its storage reports trainables.layout.STORAGE_FULL and
    waits. Then every trial is stopped as Ctrl-C stops them: Tune saves its state and leaves them
    unfinished, so `--resume` continues each from its last complete checkpoint once there is
    space (stopping them as finished would lose that). Tune's own interrupt is SIGUSR1 to this
    process."""

    def __init__(self):
        self.stopping = False

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if result.get(STORAGE_FULL) and not self.stopping:
            self.stopping = True
            log.info(f"{result[STORAGE_FULL]}; stopping every trial")
            os.kill(os.getpid(), signal.SIGUSR1)


class SearchBudget(ray.tune.stopper.Stopper):
    """--search-horizon long: the search ends once its trials have trained `limit` trial-steps in
    all (each trial counted to its latest reported step); the final phase trains the best on for
    what --budget has left. A resumed sweep counts the trials of its earlier runs too (read from the
    experiment as this run's first result comes: Tune keeps no stopper state across a restore)."""

    def __init__(self, limit: int, exp_uri: str):
        self.limit, self.exp_uri, self.steps, self.said = limit, exp_uri, None, False

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, steps=None)  # counted again from the experiment as a resume starts

    def __call__(self, trial_id: str, result: dict) -> bool:
        if self.steps is None:
            from trainables.experiment import load_experiment

            self.steps = {t.trial_id: t.last_step for t in load_experiment(self.exp_uri).search_trials}
        self.steps[trial_id] = max(self.steps.get(trial_id, 0), int(result.get("step") or 0))
        if self.stop_all() and not self.said:
            self.said = True
            log.info(f"the search has trained {self.spent} of its {self.limit} trial-steps: it stops here")
        return False

    @property
    def spent(self) -> int:
        return sum((self.steps or {}).values())

    def stop_all(self) -> bool:
        return self.spent >= self.limit


class FinalHalving(FIFOScheduler):
    """--final-halving: the final phase's candidates as successive halving (orchestrator.spec
    halving_rungs). A candidate's steps count from the checkpoint it started from (`starts`, by
    its FinalStart checkpoint). At each rung, once every candidate still in has a reading of
    `metric` there, the better `keep[i]` go on and the others stop. The candidates train at once
    (the final phase gives each its share of the cores), so one that reaches a rung first trains
    on meanwhile, rather than being paused and restarted; the last one stops at its last evaluation
    within the phase's `trial_steps` in all, so those extra steps come out of its own. Tune's ASHA
    can't do this: it decides each trial as it arrives, so of two the first always goes on. Tune
    restores a scheduler without its state: a resumed phase counts its stopped candidates' steps
    from their last results, and decides again any rung it had not decided."""

    def __init__(self, metric: str, mode: str, rungs: list[int], keep: list[int], starts: dict[str, int],
                 trial_steps: int, eval_every: int):
        super().__init__()
        self.ranked_by, self.sign = metric, 1 if mode == "min" else -1
        self.rungs, self.keep, self.starts, self.trial_steps = rungs, keep, starts, trial_steps
        self.eval_every = eval_every
        self.trials: dict[str, object] = {}  # the candidates still in, by trial id
        self.trained: dict[str, int] = {}  # every candidate's steps since its start
        self.readings: list[dict[str, float]] = [{} for _ in rungs]
        self.decided = 0  # rungs decided

    def on_trial_add(self, tune_controller, trial) -> None:
        if trial.last_result:  # a resumed phase's trial: the steps it trained before
            self.trained[trial.trial_id] = self.steps_of(trial, trial.last_result)
        if trial.status not in (trial.TERMINATED, trial.ERROR):  # a resumed sweep's stopped ones stay out
            self.trials[trial.trial_id] = trial

    def steps_of(self, trial, result: dict) -> int:
        """A candidate's steps since the checkpoint it started from."""
        return int(result.get("step") or 0) - self.starts.get(FinalStart.split(trial.config)[1].checkpoint, 0)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id not in self.trials:
            return self.CONTINUE
        trained = self.steps_of(trial, result)
        self.trained[trial.trial_id] = max(self.trained.get(trial.trial_id, 0), trained)
        if self.ranked_by in result:
            for rung in range(self.decided, len(self.rungs)):
                if trained >= self.rungs[rung]:
                    self.readings[rung].setdefault(trial.trial_id, float(result[self.ranked_by]))
        if trial.trial_id in self.decide(tune_controller, trial):
            return self.STOP
        evaluated = trained % self.eval_every == 0  # starts are on evaluations: so is this step
        if len(self.trials) == 1 and evaluated and sum(self.trained.values()) + self.eval_every > self.trial_steps:
            # the next evaluation would come after the phase's last trial-step
            log.info(f"final phase: its {self.trial_steps} trial-steps are trained; trial {trial.trial_id} stops at "
                     f"step {result.get('step')}")
            return self.STOP
        return self.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self.leave(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.leave(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.leave(tune_controller, trial)

    def leave(self, tune_controller, trial) -> None:
        """A candidate that ended (finished, failed or stopped) no longer holds up a rung."""
        if self.trials.pop(trial.trial_id, None) is not None:
            self.decide(tune_controller, None)

    def decide(self, tune_controller, current) -> set[str]:
        """Every rung whose readings are all in: its weaker candidates stop (the `current` one by
        the caller's decision, the others here). Returns the ids stopped."""
        stopped = set()
        while self.trials and self.decided < len(self.rungs) and set(self.trials) <= set(self.readings[self.decided]):
            readings, kept = self.readings[self.decided], self.keep[self.decided]
            ranked = sorted(self.trials, key=lambda t: math.inf if math.isnan(readings[t]) else self.sign * readings[t])
            losers = [self.trials.pop(t) for t in ranked[kept:]]
            self.decided += 1  # before stopping: Tune tells this scheduler of each stop, which decides again
            log.info(f"final phase, rung at {self.rungs[self.decided - 1]} steps: "
                     + ", ".join(f"trial {t} {self.ranked_by} {readings[t]:.4g}" for t in ranked)
                     + f"; {', '.join(ranked[:kept])} go{'es' if kept == 1 else ''} on")
            for loser in losers:
                stopped.add(loser.trial_id)
                if current is None or loser.trial_id != current.trial_id:
                    tune_controller.stop_trial(loser)
        return stopped


class ExtendableSearch(SearchGenerator):
    """Tune's wrapper of the sweep's searcher, whose trial count `--resume --trials N` may raise:
    a restored run gets the count saved with the searcher's state, and this takes sweep.json's
    `trials` where that is larger (the sweep writes it before restoring). The Optuna study goes
    on, so TPE learns from every earlier trial."""

    def __init__(self, searcher, spec_uri: str):
        super().__init__(searcher)
        self.spec_uri = spec_uri

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        wanted = spec_trials(self.spec_uri)
        if wanted > self._total_samples:
            self._total_samples, self._finished = wanted, False


class HideTuneRestoreHint(logging.Filter):
    """An interrupted Tune run logs `Tuner.restore(...)` as the way to resume; the sweep says its own
    `--resume` command instead (the hint's wording, in ray/tune/tune.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Tuner.restore" not in message and "Trials did not complete" not in message


def legacy_names() -> None:
    """Experiments written before 0.3 pickled these plug-ins as trainables.ray_trial's: a resume
    of one unpickles them from there."""
    import trainables.ray_trial

    for cls in (DivergedIsPruned, KeepResultsOnRestart, StopWhenStorageFull, SweepProgress, ExtendableSearch):
        setattr(trainables.ray_trial, cls.__name__, cls)
