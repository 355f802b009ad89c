"""Where experiments pickled before 0.3.0 find the sweep's Tune callbacks: their tuner.pkl refers to
this module, and `--resume` unpickles it. The callbacks live in trainables.ray_trial."""

from trainables.ray_trial import KeepResultsOnRestart, StopWhenStorageFull

__all__ = ["KeepResultsOnRestart", "StopWhenStorageFull"]
