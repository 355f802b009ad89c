"""Joining a Ray cluster, or starting a local one, for the commands that run on Ray (sweep, rescore)."""

from __future__ import annotations

import logging
import os

from trainables.cli import UsageError


def init_ray(address: str | None, verbose: bool = False) -> tuple[str | None, bool]:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray.
    Returns the dashboard URL and whether the Ray is a local one started here."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if local and not verbose:  # a Ray of this machine's own: its token-auth notice says nothing to do
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if not local:
            context = ray.init(address=address, logging_level="WARNING")
        else:
            # one logical CPU more than the cores, for the trial drivers (see TRIAL_DRIVER_CPU)
            # address="local": a new Ray of its own, even where `ray start` left one running
            # the dashboard wherever ray[default] is installed (None: Ray starts it if it can)
            context = ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 1, logging_level="WARNING",
                               include_dashboard=None, dashboard_host="127.0.0.1")
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if local:
            raise UsageError(f"cannot start a local Ray: {first}") from None
        raise UsageError(f"cannot reach Ray at {address or os.environ.get('RAY_ADDRESS')}: {first}") from None
    return context.dashboard_url, local
