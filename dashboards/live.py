"""The dashboard while a sweep runs: `STORAGE/NAME/dashboard.html` rebuilt from the experiment's
files by a background thread of the sweep's driver, so Tune's event loop never waits on it.

It rebuilds every `every` seconds and soon after a trial ends (Tune's callback
TellLiveDashboard wakes it), but never sooner after a rebuild
than nine times that rebuild's own duration: on average it takes at most a tenth of one core,
however large the sweep grows. The live page reloads itself (dashboards.page) and says how far
the sweep has got; the page the sweep writes at its end does not reload.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from ray.tune import Callback

from dashboards.page import LiveState

CPU_SHARE = 0.1  # the most of one core the rebuilds take on average


_running: "LiveDashboard | None" = None  # the one of this process, for Tune's callback


class TellLiveDashboard(Callback):
    """Wakes the sweep's live dashboard as each trial ends. It holds nothing: Tune pickles its
    callbacks into tuner.pkl, and a resumed sweep gets them back from there."""

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.wake()

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.wake()

    @staticmethod
    def wake() -> None:
        if _running is not None:
            _running.wake.set()


class LiveDashboard:
    """`start()` writes the first page and returns its path; `stop()` ends the rebuilds (the sweep
    then writes the final page). Rebuilds that keep failing are said once, in one line, and tried
    again; they never stop the sweep."""

    def __init__(self, uri: str, state: LiveState, every: float):
        self.uri, self.state, self.every = uri, state, every
        self.wake, self.done = threading.Event(), threading.Event()
        self.builds, self.cpu_seconds, self.last_cpu, self.failures = 0, 0.0, 0.0, 0
        self.thread: threading.Thread | None = None

    def start(self) -> Path | None:
        global _running
        out = self.rebuild()
        self.thread = threading.Thread(target=self._loop, name="live-dashboard", daemon=True)
        self.thread.start()
        _running = self
        return out

    def stop(self) -> None:
        global _running
        _running = None if _running is self else _running
        self.done.set()
        self.wake.set()
        if self.thread:
            self.thread.join()

    def rebuild(self) -> Path | None:
        from dashboards.build import build
        from trainables.experiment import load_experiment

        started = time.thread_time()
        try:
            out = build([load_experiment(self.uri)], live=self.state)
            self.failures = 0
            return out
        except Exception as e:  # a file deleted as it was read, the store briefly away: read again next time
            self.failures += 1
            if self.failures == 2:  # said once, when it is not a passing race
                print(f"[sweep] warning: the live dashboard was not rebuilt ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); trying again", file=sys.stderr, flush=True)
            return None
        finally:
            spent = time.thread_time() - started
            self.builds += 1
            self.cpu_seconds += spent
            # what the next rebuild may cost: the first build's time is mostly one-time imports
            self.last_cpu = spent if self.builds > 1 else 0.0

    def _loop(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            self.wake.wait(self.every)
            if self.done.is_set():
                return
            self.wake.clear()
            rest = self.last_cpu * (1 - CPU_SHARE) / CPU_SHARE - (time.monotonic() - began)
            if rest > 0 and self.done.wait(rest):
                return
            self.rebuild()
