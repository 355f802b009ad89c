"""`ray up` end to end, on this machine: the user's path from cluster-onprem.yaml to a pulled checkpoint.

An SSH server on 127.0.0.2 (Debian's openssh-server; a throw-away host key and client key) plays
a lab machine. cluster-onprem.yaml, pointed at it, goes through `ray up -y`, its default storage
(ORCHESTRATOR_STORAGE) set to the test S3 server's bucket; a short sweep with no --storage is
submitted with `ray job submit`; its results, study and dashboard must be in the bucket, and
`orchestrator.best` exports its best checkpoint straight from there. A second sweep on an
NFS-style --storage path is pulled with `ray rsync-down`. `ray down -y` ends it. Token
authentication must refuse a client without the token, and the dashboard must listen on
127.0.0.1 only.

The "remote" side runs as root in its own PID namespace (`unshare --pid`), with its own HOME
(sshd's SetEnv): the `ray stop` that `ray up` and `ray down` run there sees only that
namespace's processes, so it can't stop the test session's Ray or any other on this machine,
and nothing is written to the real home directory. The nodes use the test's Python environment
instead of installing the project again (the only change to the setup commands).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs
import pytest
import yaml

from conftest import ROOT, run_cli

HEAD_IP = "127.0.0.2"  # any loopback address; sshd must listen on port 22 (the local provider has no port option)
GCS_PORT, DASHBOARD_PORT, CLIENT_PORT, AGENT_PORT = 6390, 8290, 6391, 6392  # not Ray's defaults: other Rays may run here
REQUIRED = os.environ.get("ORCHESTRATOR_CLUSTER_TESTS") == "required"  # .ci/run: skipping is failing
BIN = Path(sys.executable).parent
AGENT_WAIT = "RAY_agent_register_timeout_ms=180000"
S3_PREFIX = "launcher"  # the cluster's ORCHESTRATOR_STORAGE: s3://BUCKET/launcher

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (an sshd on port 22 of a loopback address, a PID namespace)"
    for tool in ("/usr/sbin/sshd", shutil.which("rsync"), shutil.which("unshare"), shutil.which("ssh-keygen")):
        if not tool or not Path(tool).exists():
            return "needs openssh-server, rsync and util-linux (apt-get install openssh-server rsync)"
    with socket.socket() as s:
        if s.connect_ex((HEAD_IP, 22)) == 0:
            return f"something already listens on {HEAD_IP}:22"
    return None


@pytest.fixture(scope="module")
def loopback_sshd(tmp_path_factory):
    reason = _missing()
    if reason:
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("sshd")
    home = tmp / "home"
    home.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True)
    shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
    (tmp / "sshd_config").write_text(f"""ListenAddress {HEAD_IP}
Port 22
HostKey {tmp}/host_key
PidFile none
AuthorizedKeysFile {tmp}/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers root
SetEnv HOME={home}
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    sshd = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "/usr/sbin/sshd", "-D",
                             "-f", str(tmp / "sshd_config"), "-E", str(tmp / "sshd.log")])
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HEAD_IP, 22)) == 0:
                break
        time.sleep(0.1)
    else:
        sshd.kill()
        pytest.fail("sshd did not start: " + (tmp / "sshd.log").read_text()[-2000:])
    yield tmp, home
    # SIGKILL to the namespace's first process (sshd): the kernel ends every process left in it
    children = Path(f"/proc/{sshd.pid}/task/{sshd.pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        os.kill(int(child), signal.SIGKILL)
    sshd.kill()
    sshd.wait(timeout=30)


def cluster_config(tmp: Path, home: Path, token_file: Path, s3_server: dict) -> Path:
    """cluster-onprem.yaml as a user fills it in for one machine (the head runs the trials), its
    default storage (ORCHESTRATOR_STORAGE) set to the test's S3 bucket, with the S3 endpoint and
    keys in the node's environment (on AWS: the instance profile)."""
    config = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    config["cluster_name"] = f"loopback-{secrets.token_hex(3)}"
    config["provider"].update(head_ip=HEAD_IP, worker_ips=[])
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(tmp / "client_key")}
    config["min_workers"] = config["max_workers"] = 0
    config["file_mounts"] = {"~/gen-orchestrator": str(ROOT), "~/.ray/auth_token": str(token_file)}
    # this machine's environment already holds the project: put it on the PATH instead of installing
    (storage_line,) = [c for c in config["setup_commands"] if "ORCHESTRATOR_STORAGE=" in c]
    s3 = {k: s3_server[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    s3.update(AWS_ENDPOINT_URL=s3_server["endpoint"], AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    config["setup_commands"] = [
        f"echo 'export PATH={BIN}:$PATH RAY_AUTH_MODE=token' >> ~/.bashrc",
        "echo 'export " + " ".join(f"{k}={v}" for k, v in s3.items()) + "' >> ~/.bashrc",
        storage_line.replace("/shared/experiments", f"s3://{s3_server['bucket']}/{S3_PREFIX}")]

    def local_ports(command: str) -> str:
        # a loaded 2-core machine can take more than the raylet's default wait for its dashboard agent
        command = command.replace("RAY_AUTH_MODE=token ray start", f"RAY_AUTH_MODE=token {AGENT_WAIT} ray start")
        return (command.replace("--port=6379", f"--port={GCS_PORT} --dashboard-port={DASHBOARD_PORT} "
                                               f"--ray-client-server-port={CLIENT_PORT} --dashboard-agent-listen-port={AGENT_PORT} "
                                               f"--object-store-memory=300000000")
                .replace("--num-cpus=0", "--num-cpus=3").replace(":6379", f":{GCS_PORT}"))
    config["head_start_ray_commands"] = [local_ports(c) for c in config["head_start_ray_commands"]]
    config["worker_start_ray_commands"] = [local_ports(c) for c in config["worker_start_ray_commands"]]
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def ray_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return proc


def listening_hosts(port: int) -> set[str]:
    """The IPv4 addresses with a TCP socket listening on `port` (from /proc/net/tcp)."""
    hosts = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            hosts.add(socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1]))
    return hosts


def test_ray_up_sweep_pull_best_ray_down(loopback_sshd, cache_dir, s3_server, tmp_path):
    tmp, home = loopback_sshd
    token = secrets.token_hex(32)
    token_file = tmp / "auth_token"
    token_file.write_text(token)
    config = cluster_config(tmp, home, token_file, s3_server)
    timings = {}

    start = time.time()
    up = ray_cli("up", "-y", "--no-config-cache", str(config))
    timings["ray up"] = time.time() - start
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert (home / "gen-orchestrator" / "orchestrator" / "sweep.py").is_file(), "file_mounts did not sync the tree"
        assert listening_hosts(DASHBOARD_PORT) == {"127.0.0.1"}, listening_hosts(DASHBOARD_PORT)

        # token authentication: a client without the token is refused
        dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
        no_token = ray_cli("job", "list", "--address", dashboard, timeout=120,
                           env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token", "HOME": str(tmp_path)})
        assert no_token.returncode != 0, no_token.stdout[-2000:]
        with_token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}

        # as the README says: this working tree travels with the job (--working-dir), the nodes' Python
        # runs it; with no --storage the sweep writes to the cluster's ORCHESTRATOR_STORAGE (the bucket)
        runtime_env = {"working_dir": str(ROOT), "env_vars": {"ORCHESTRATOR_CACHE": str(cache_dir)}}
        sweep = ["python", "-m", "orchestrator.sweep", "dcgan", "--dataset", "digits", "--set", "width=8",
                 "--trials", "1", "--max-steps", "40", "--eval-every", "20", "--log-every", "10",
                 "--eval-samples", "300", "--scheduler", "fifo", "--address", "auto", "--name", "loopback"]
        start = time.time()
        job = ray_cli("job", "submit", "--address", dashboard, "--runtime-env-json", json.dumps(runtime_env),
                      "--", *sweep, env=with_token)
        timings["sweep job"] = time.time() - start
        assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-4000:] + job.stderr[-2000:]
        uri = f"s3://{s3_server['bucket']}/{S3_PREFIX}/loopback"
        assert uri in job.stdout, job.stdout[-3000:]
        for name in ("sweep.json", "dashboard.html", "optuna.db"):
            info = s3_server["fs"].get_file_info(f"{s3_server['bucket']}/{S3_PREFIX}/loopback/{name}")
            assert info.type == pyarrow.fs.FileType.File, name

        # from the "laptop": export the best checkpoint straight from the bucket, sample from it
        best = run_cli("orchestrator.best", uri, "--dst", str(tmp_path / "best"))
        assert best.returncode == 0, best.stderr[-2000:]
        (checkpoint,) = (tmp_path / "best").glob("rank1-*")
        sample = run_cli("orchestrator.infer", str(checkpoint), "sample", "--out", str(tmp_path / "s.png"))
        assert sample.returncode == 0 and (tmp_path / "s.png").stat().st_size > 0, sample.stderr[-2000:]

        # an NFS-style path that every node mounts, given as --storage, and pulled with `ray rsync-down`
        storage = tmp / "shared-experiments"
        nfs = [*sweep[:-2], "--storage", str(storage), "--name", "nfs"]
        job = ray_cli("job", "submit", "--address", dashboard, "--runtime-env-json", json.dumps(runtime_env),
                      "--", *nfs, env=with_token)
        assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-4000:] + job.stderr[-2000:]
        pulled = tmp_path / "pulled"
        down = ray_cli("rsync-down", str(config), f"{storage}/nfs/", str(pulled))
        assert down.returncode == 0, down.stderr[-2000:]
        best = run_cli("orchestrator.best", str(pulled), "--dst", str(tmp_path / "best-nfs"))
        assert best.returncode == 0, best.stderr[-2000:]
    finally:
        start = time.time()
        teardown = ray_cli("down", "-y", str(config))
        timings["ray down"] = time.time() - start
        print("loopback cluster timings (s):", {k: round(v, 1) for k, v in timings.items()})
    assert teardown.returncode == 0, teardown.stderr[-2000:]
    assert not listening_hosts(DASHBOARD_PORT), "ray down left the cluster's dashboard running"
