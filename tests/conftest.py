"""One real local Ray cluster and one real S3 server (SeaweedFS) for the whole test session;
sweeps join the cluster with --address."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import seaweedfs
from seaweedfs import free_port  # noqa: F401  (the tests' free ports come from here)
from warm_cli import WarmCli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A fresh cache, so feature networks are really trained in this session."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["ORCHESTRATOR_CACHE"] = str(path)
    return path


S3_BUCKET = "experiments"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (tests/seaweedfs.py) for the session. Its address and keys go into this
    process's environment before the Ray cluster starts, so the cluster's workers (trials writing
    checkpoints) reach it as a user's nodes reach S3."""
    try:
        server = seaweedfs.start(tmp_path_factory.mktemp("seaweedfs"), S3_BUCKET)
    except RuntimeError as e:
        pytest.fail(str(e))
    os.environ.update(server.env)
    yield {"endpoint": server.env["AWS_ENDPOINT_URL"], "bucket": S3_BUCKET, "fs": server.fs, **seaweedfs.KEYS}
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(cache_dir, s3_server):
    import ray._private.services
    from ray.cluster_utils import Cluster

    # The head's processes get RAY_ADDRESS: Ray Train's placement-group cleaner (on the head) finds
    # the State API through it, not by guessing among the Rays running on this machine.
    port, dashboard_port = free_port(), free_port()
    os.environ["RAY_ADDRESS"] = f"{ray._private.services.get_node_ip_address()}:{port}"
    try:
        # 2 cores + 1 logical CPU for the idle trial drivers, as orchestrator.sweep starts a local
        # Ray. With the dashboard, as real clusters have it: Ray Train frees the CPUs reserved for a
        # trial's workers after its driver died with its node only when the State API says so.
        cluster = Cluster(initialize_head=True, head_node_args={
            "gcs_server_port": port, "num_cpus": 3, "include_dashboard": True, "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port})
    finally:
        del os.environ["RAY_ADDRESS"]
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_cluster) -> str:
    return ray_cluster.address


# every CLI the tests run: no Python warnings; the sweep's plain status line (orchestrator.progress)
# every half second, so that short sweeps show it too
CLI_ENV = {"PYTHONWARNINGS": "ignore", "ORCHESTRATOR_PROGRESS_SECONDS": "0.5"}


_warm: WarmCli | None = None


@pytest.fixture(scope="session", autouse=True)
def warm_cli():
    """The warm interpreter that run_cli's commands are forked from (tests/warm_cli.py), importing in
    the background from the session's start."""
    global _warm
    _warm = WarmCli(ROOT, {**os.environ, **CLI_ENV})
    yield _warm
    _warm.close()


def pytest_terminal_summary(terminalreporter):
    if _warm is not None and (_warm.forked or _warm.fresh):
        terminalreporter.write_line(_warm.summary())


def cli_args(args: tuple[str, ...], rescore: bool) -> tuple[str, ...]:
    """A sweep skips its closing re-scoring unless the test asks for it (tests/test_rescore.py does):
    it would add a few seconds to each of the suite's many sweeps and test nothing new there."""
    if args[0] == "orchestrator.sweep" and not rescore and "--rescore-top" not in args and "--help" not in args:
        return (*args, "--rescore-top", "0")
    return args


def run_cli(*args: str, timeout: float = 600, cwd: Path | None = None, env: dict | None = None,
            rescore: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m ...` as a user would, in a process of its own (forked from the warm
    interpreter, tests/warm_cli.py); returns the finished process (text output). `env` adds to the
    session's environment."""
    args = cli_args(args, rescore)
    return _warm.run(args[0], list(args[1:]), cwd or ROOT, {**os.environ, **CLI_ENV, **(env or {})}, timeout)


def start_cli(*args: str, output: Path, cwd: Path | None = None, rescore: bool = False):
    """`python -m ...` in the background, stdout and stderr into the file `output` (a pipe could
    fill and block it): a process with pid, send_signal, poll, wait and returncode."""
    args = cli_args(args, rescore)
    return _warm.start(args[0], list(args[1:]), cwd or ROOT, {**os.environ, **CLI_ENV}, str(output), str(output))


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def diverging_sweep(ray_address: str, storage: Path, *args: str) -> subprocess.CompletedProcess:
    """A 2-trial vae sweep (experiment "nan") of which one trial diverges: lr 10 makes the VAE's loss
    infinite within two steps, lr 2e-3 trains; seed 0 draws both."""
    space = storage / "space.toml"
    space.write_text('arch = "mlp"\nlatent_dim = 8\n[lr]\ndistribution = "choice"\nvalues = [10.0, 0.002]\n')
    return run_cli("orchestrator.sweep", "vae", "--dataset", "digits", "--space", str(space), "--trials", "2",
                   "--max-steps", "40", "--eval-every", "20", "--log-every", "10", "--eval-samples", "300",
                   "--max-concurrent", "1", "--storage", str(storage), "--name", "nan", "--address", ray_address,
                   "--seed", "0", *args)


def family_sweep(ray_address: str, storage: Path, model: str, *args: str, trials: int = 2, max_steps: int = 60,
                 eval_every: int = 30, name: str | None = None) -> Path:
    """A short real sweep of one model family (fifo: both trials run to the end); returns the
    experiment directory after checking the sweep succeeded."""
    name = name or model
    proc = run_cli("orchestrator.sweep", model, "--trials", str(trials), "--max-steps", str(max_steps),
                   "--eval-every", str(eval_every), "--log-every", str(max(1, eval_every // 2)),
                   "--eval-samples", "500", "--scheduler", "fifo", "--storage", str(storage), "--name", name,
                   "--address", ray_address, *args)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return storage / name


@pytest.fixture(scope="session")
def tiny_experiment(ray_address, tmp_path_factory) -> Path:
    """One real dcgan sweep on digits (1 trial, 20 steps, 2 checkpoints, one objective), shared by
    the tests that need any finished experiment. They copy it before changing anything in it."""
    return family_sweep(ray_address, tmp_path_factory.mktemp("tiny"), "dcgan", "--dataset", "digits", "--set",
                        "width=8", "--no-dashboard", trials=1, max_steps=20, eval_every=10, name="tiny")


def sweep_spec(*argv: str):
    """The spec `python -m orchestrator.sweep ARGV` would build, its notes printed as the command
    line prints them (capsys sees them)."""
    from orchestrator.options import SweepOptions
    from orchestrator.spec import make_spec
    from orchestrator.sweep import build_parser, command_line_logging

    with command_line_logging():
        return make_spec(SweepOptions.from_args(build_parser().parse_args(list(argv))))
