"""What the terminal shows while a sweep runs (Tune itself runs silent unless --verbose: its status
tables ran to ~117 lines for 2 trials): a line as each trial ends, and between them a status of
the trials done, running (each at its step of its budget) and pending, the best so far and an
estimate of the time left. On a terminal it is a tqdm bar redrawn in place; elsewhere (CI, `ray
job logs`, a file) a plain line every $ORCHESTRATOR_PROGRESS_SECONDS seconds (60)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time

import ray.tune

from trainables import storage
from trainables.errors import BadInput
from trainables.settings import FinalStart

log = logging.getLogger("orchestrator.sweep")
PLAIN_EVERY_ENV = "ORCHESTRATOR_PROGRESS_SECONDS"  # between plain status lines (default 60), read as a sweep starts
REDRAW_EVERY = 0.5  # between redraws of the bar on a terminal
SHOWN_RUNNING = 4  # running trials named in the status, the rest counted


class SweepProgress(ray.tune.Callback):
    """The sweep's progress as its trials report (Tune callbacks run in the driver, which prints)."""

    def __init__(self, trials: int, objective: str, mode: str, spec_uri: str | None = None, max_steps: int = 0):
        self.trials, self.objective, self.mode, self.spec_uri = trials, objective, mode, spec_uri
        self.max_steps = max_steps

    def __getstate__(self) -> dict:  # pickled with the Tuner: nothing of this run's terminal
        return {k: v for k, v in self.__dict__.items() if k in ("trials", "objective", "mode", "spec_uri", "max_steps")}

    # --- Tune's hooks ---------------------------------------------------------------------------
    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        state = self.state()
        step = result.get("step")
        if isinstance(step, (int, float)) and math.isfinite(step):
            first = state["first_step"].setdefault(trial.trial_id, step)
            state["trained"][trial.trial_id] = step - first

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        state = self.state()
        now = time.monotonic()
        if now - state["drawn"] >= (REDRAW_EVERY if state["bar"] is not None else state["plain_every"]):
            state["drawn"] = now
            self.draw(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.ended(trials, trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.ended(trials, trial, errored=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        bar = self.state()["bar"]
        if bar is not None:
            bar.close()

    # --- what it says ---------------------------------------------------------------------------
    def state(self) -> dict:
        """This run's own (never pickled): the bar on a terminal, steps trained per trial, timings."""
        if "_state" not in self.__dict__:
            bar = None
            if sys.stdout.isatty():
                from tqdm import tqdm

                # a terminal that reports no width (0 columns: some pseudo-terminals) gets 80, or $COLUMNS
                wide = os.get_terminal_size(sys.stdout.fileno()).columns > 0
                bar = tqdm(total=1, leave=False, file=sys.stdout, dynamic_ncols=wide,
                           ncols=None if wide else shutil.get_terminal_size().columns,
                           bar_format="{percentage:3.0f}% |{bar:20}| {desc}")
            now = time.monotonic()
            self._state = {"bar": bar, "first_step": {}, "trained": {}, "start": now, "drawn": now,
                           "plain_every": storage.env_seconds(PLAIN_EVERY_ENV, 60, zero_ok=True)}
        return self._state

    def total(self, again: bool = False) -> int:
        """The sweep's trial count, which an extended sweep raised (ExtendableSearch): read from
        sweep.json once, and `again` as each trial ends (not at every redraw: it may be on S3);
        where it can't be read, the count the sweep started with."""
        state = self.state()
        if "total" not in state or again:
            state["total"] = self.trials
            if getattr(self, "spec_uri", None):
                try:
                    state["total"] = max(self.trials, spec_trials(self.spec_uri))
                except (OSError, ValueError, BadInput):
                    pass
        return state["total"]

    def budget(self, trial) -> int:
        """The step a trial trains to: a final trial's own, else the sweep's --max-steps."""
        final = FinalStart.split(trial.config or {})[1]
        return final.until if final else getattr(self, "max_steps", 0)

    def best(self, trials: list) -> str:
        key = f"{self.objective}_best"
        scored = [(t.last_result[key], t) for t in trials
                  if isinstance((t.last_result or {}).get(key), (int, float)) and math.isfinite(t.last_result[key])]
        if not scored:
            return ""
        value, trial = (min if self.mode == "min" else max)(scored, key=lambda s: s[0])
        return f"best {self.objective} so far {value:.4g} (trial {trial.trial_id})"

    def ended(self, trials: list, ending, errored: bool) -> None:
        """A line as each trial ends (`ending` has not got its final status yet when Tune calls back)."""
        done = [t for t in trials if t.status in ("TERMINATED", "ERROR") and t is not ending]
        errored = sum(t.status == "ERROR" for t in done) + errored
        best = self.best(trials)
        line = (f"{len(done) + 1} of {self.total(again=True)} trials done" + (f", {errored} errored" if errored else "")
                + (f"; {best}" if best else ""))
        bar = self.state()["bar"]
        if bar is not None:
            bar.clear()
        log.info(line)
        if bar is not None:
            self.draw(trials)

    def draw(self, trials: list) -> None:
        """The status: a redrawn bar on a terminal, else one plain line."""
        state = self.state()
        running = [t for t in trials if t.status == "RUNNING"]
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        pending = self.total() - done - len(running)
        steps = {t.trial_id: (t.last_result or {}).get("step", 0) or 0 for t in running}
        shown = ", ".join(f"{t.trial_id} step {steps[t.trial_id]:.0f}/{self.budget(t)}" for t in running[:SHOWN_RUNNING])
        if len(running) > SHOWN_RUNNING:
            shown += f", +{len(running) - SHOWN_RUNNING}"
        left = self.time_left(running, steps, pending)
        best = self.best(trials)
        status = (f"{done} done, {len(running)} running" + (f" ({shown})" if shown else "") + f", {pending} pending"
                  + (f"; {best}" if best else "") + (f"; {left}" if left else ""))
        bar = state["bar"]
        if bar is None:
            if running:  # nothing new to say while trials wait to start
                log.info(status)
            return
        bar.total, bar.n = max(1, self.total()), done
        bar.set_description_str(status, refresh=False)
        bar.refresh()

    def time_left(self, running: list, steps: dict, pending: int) -> str:
        """At most this long: the steps still to train (running trials to their budget, pending ones
        all of theirs; ASHA may stop some early) at the rate trained so far."""
        state = self.state()
        trained, elapsed = sum(state["trained"].values()), time.monotonic() - state["start"]
        if trained <= 0 or elapsed < 5 or not getattr(self, "max_steps", 0):
            return ""
        remaining = sum(max(0, self.budget(t) - steps[t.trial_id]) for t in running) + max(0, pending) * self.max_steps
        seconds = remaining / (trained / elapsed)
        return f"at most ~{seconds / 60:.0f} min left" if seconds >= 90 else f"at most ~{seconds:.0f} s left"


def spec_trials(spec_uri: str) -> int:
    """The trial count in sweep.json (0 where it is not a whole number)."""
    trials = json.loads(storage.location(spec_uri).read_text()).get("trials", 0)
    return trials if isinstance(trials, int) and not isinstance(trials, bool) else 0
