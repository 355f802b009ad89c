"""Sweeps of generative image models on Ray Tune: `run_sweep(SweepOptions(...))` from Python (see
orchestrator.run), or `python -m orchestrator.sweep` from a shell."""

from orchestrator.options import SweepOptions
from orchestrator.run import SweepResult, run_sweep

__all__ = ["SweepOptions", "SweepResult", "run_sweep"]
