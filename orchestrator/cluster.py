"""Joining a Ray cluster, or starting a local one, for the commands that run on Ray (sweep, rescore)."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from trainables.cli import UsageError
from trainables.settings import Resources
from trainables.storage import Location, first_line

log = logging.getLogger("orchestrator.sweep")

# The Tune function that fits a trial's TorchTrainer mostly waits; it asks for a sliver of CPU
# (Tune refuses 0). So that N one-CPU trials fit N cores, a local Ray gets one extra logical CPU.
TRIAL_DRIVER_CPU = 0.01


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


@dataclass(frozen=True)
class RayConnection:
    dashboard_url: str | None
    local: bool  # a Ray of this machine's own (not a cluster joined at an address)
    started_here: bool  # started or joined by this call: the command shuts it down, a caller's Ray stays up


def init_ray(address: str | None, verbose: bool = False, family_source: dict | None = None) -> RayConnection:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray; a Ray the caller
    started (ray.init in a notebook) is used as it is. A family of the user's own reaches every
    node's trials through the job's runtime_env (py_modules)."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if ray.is_initialized():  # the caller's: local where this is its only node
        here = ray.get_runtime_context().get_node_id()
        alive = [n for n in ray.nodes() if n.get("Alive")]
        return RayConnection(None, all(n["NodeID"] == here for n in alive), started_here=False)
    if local and not verbose:  # a Ray of this machine's own: its token-auth notice says nothing to do
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    runtime_env = family_runtime_env(family_source)
    try:
        if not local:
            context = ray.init(address=address, logging_level="WARNING", runtime_env=runtime_env)
        else:
            # one logical CPU more than the cores, for the trial drivers (see TRIAL_DRIVER_CPU)
            # address="local": a new Ray of its own, even where `ray start` left one running
            # the dashboard wherever ray[default] is installed (None: Ray starts it if it can)
            context = ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 1, logging_level="WARNING",
                               include_dashboard=None, dashboard_host="127.0.0.1", runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:  # RayError: runtime_env upload
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if local:
            raise UsageError(f"cannot start a local Ray: {first}") from None
        raise UsageError(f"cannot reach Ray at {address or os.environ.get('RAY_ADDRESS')}: {first}") from None
    return RayConnection(context.dashboard_url, local, started_here=True)


def family_runtime_env(source: dict | None) -> dict | None:
    """What every worker process needs of a family of the user's own: its file, or the top folder
    of its package (Ray's py_modules puts it on each node's import path under its own name). None
    for a built-in family, an installed package's (every node has it) and one of __main__ (its
    class travels with the trials' settings)."""
    if not source or not source.get("file") or source.get("installed") or source.get("module") == "__main__":
        return None
    file, parts = Path(source["file"]), source["module"].split(".")
    if not file.is_file():
        raise UsageError(f"model family module {source['module']}: {file} is not here; pass --family-module with "
                         f"its file")
    if file.name == "__init__.py":
        shipped = file.parents[len(parts) - 1]
    else:
        shipped = file if len(parts) == 1 else file.parents[len(parts) - 2]
    return {"py_modules": [str(shipped)]}


AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` leaves the cluster's config on the head


def autoscaler_capacity(kind: str, config_file: Path = AUTOSCALER_CONFIG) -> float:
    """The most of `kind` (CPU or GPU) the autoscaler may give this cluster: each node type's
    resources times its max_workers (the head once), from the config `ray up` left on the head.
    0 when the sweep does not run on a `ray up` head or the config says nothing of `kind`."""
    import yaml

    try:
        config = yaml.safe_load(config_file.expanduser().read_text())
        head = config.get("head_node_type")
        return float(sum(float((node.get("resources") or {}).get(kind, 0)) *
                         (1 if name == head else int(node.get("max_workers", 0)))
                         for name, node in config.get("available_node_types", {}).items()))
    except (OSError, AttributeError, TypeError, ValueError, yaml.YAMLError):
        return 0.0


def default_concurrency(resources: Resources, local: bool) -> int:
    """How many trials the cluster fits at once: what it has now or, on an autoscaling cluster,
    what the autoscaler may add (so that waiting trials make it scale up to that); a trial that
    can never fit a local Ray is bad input."""
    import ray

    cluster = ray.cluster_resources()
    gpus, cpus, workers = resources.gpus_per_worker, resources.cpus_per_worker, resources.workers_per_trial
    kind, per_worker = ("GPU", gpus) if gpus > 0 else ("CPU", cpus)
    need, have = max(per_worker, 0.01) * workers, cluster.get(kind, 0)
    if not local:
        have = max(have, autoscaler_capacity(kind))
    if kind == "CPU":
        need += TRIAL_DRIVER_CPU
    if need > have:
        message = (f"a trial needs {need:g} {kind} ({workers} workers x {per_worker:g}) "
                   f"but the cluster has {have:g}")
        if local:
            raise UsageError(message + "; lower --workers-per-trial or --cpus-per-worker")
        log.warning(f"warning: {message}; trials wait until the autoscaler adds nodes")
    return max(1, int(have / need))


def check_shared(root: Location) -> None:
    """On a cluster of several nodes, a local --storage must be a folder every node sees (NFS):
    trials elsewhere would keep their checkpoints on their own disks. A file written here must be
    visible from every other live node (as Ray Train's own storage validation marker checks)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if root.remote:
        return
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if autoscaler_capacity("CPU") + autoscaler_capacity("GPU") > 0:
        log.warning(f"warning: --storage {root} is a local path and the autoscaler may add nodes, which this "
                    f"check can't see; it must be a path every node mounts (NFS), or use s3://")
    if not others:
        return
    marker = root / f".shared-storage-check-{os.getpid()}-{time.time_ns()}"
    try:
        marker.write_text("written by orchestrator.sweep on the driver's node; removed at once")
    except OSError as e:
        raise UsageError(f"cannot write to --storage {root} ({e.strerror or first_line(e)}); choose another") from None

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.isfile(path)

    calls = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
             .remote(marker.path) for n in others]
    seen = []
    try:
        for call in calls:  # a node that died meanwhile, or never answers, says nothing either way
            try:
                seen.append(ray.get(call, timeout=60))
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                seen.append(True)
    finally:
        marker.delete_file()
    blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(others, seen) if not ok]
    if blind:
        raise UsageError(f"--storage {root} is this machine's own disk: {len(blind)} of the "
                         f"cluster's other nodes ({', '.join(blind)}) don't see it, and their trials would keep "
                         f"checkpoints there; pass --storage s3://BUCKET/PATH (or set $ORCHESTRATOR_STORAGE) or a path "
                         f"every node mounts")
