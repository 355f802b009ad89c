"""Joining a Ray cluster, or starting a local one, for the commands that run on Ray (sweep, rescore)."""

from __future__ import annotations

import logging
import os
import socket

from trainables.cli import UsageError


def check_address(address: str | None) -> None:
    """Fail fast where nothing listens at the Ray address: ray.init would retry for minutes, with
    pages of warnings, before giving up."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"Ray address {address!r} is not auto or HOST:PORT (e.g. 10.0.0.5:6379); fix --address "
                         f"or $RAY_ADDRESS")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise UsageError(f"cannot reach Ray at {address} ({e.strerror or str(e) or type(e).__name__}); start it with "
                         f"`ray start --head` or fix --address / $RAY_ADDRESS") from None


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
