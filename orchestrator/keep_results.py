"""Where the oldest pickled experiments find the sweep's Tune callbacks: their tuner.pkl refers to
this module, and `--resume` unpickles it. The callbacks live in orchestrator.tune_plugins."""

from orchestrator.tune_plugins import KeepResultsOnRestart, StopWhenStorageFull

__all__ = ["KeepResultsOnRestart", "StopWhenStorageFull"]
