"""A warm interpreter for the tests' command lines: `python -m orchestrator.X ARGS` as a process of
its own, forked from a server that has already imported torch, torchvision, torchmetrics, Ray and
this project. Each command still gets a fresh process (its own cwd, environment, stdout, stderr and
exit code); only the seconds of imports before it reads its arguments are shared.

Why our own: pytest-xdist and multiprocessing's forkserver run functions, not `-m` modules with
their own streams and exit codes. A command whose environment differs from the server's in what an
interpreter or a library reads as it starts (PYTHONPATH, RAY_*, OMP_NUM_THREADS, ...) runs in a real
`python -m` instead, and so does every command when ORCHESTRATOR_TEST_FRESH_CLI=1."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# read by the interpreter, or by a library as it is imported: a command whose value differs runs in a
# fresh process. Ray's, gRPC's and OpenMP's own variables too, except those that libraries and this
# project's code set in the tests' process (every command sets them again for itself).
STARTUP = {"PYTHONPATH", "PYTHONHOME", "PYTHONWARNINGS", "PYTHONHASHSEED", "PYTHONSAFEPATH", "PYTHONNOUSERSITE",
           "PYTHONOPTIMIZE", "PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDEVMODE",
           "PYTHONFAULTHANDLER", "LANG", "TZ", "TMPDIR", "LD_PRELOAD", "LD_LIBRARY_PATH", "OMP_NUM_THREADS",
           "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES"}
STARTUP_PREFIXES = ("RAY_", "GRPC_", "KMP_", "LC_")
SET_IN_PROCESS = {"RAY_CLIENT_MODE", "RAY_TRAIN_V2_ENABLED", "RAY_AIR_NEW_OUTPUT", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                  "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK"}
WARM_MODULES = ("torch", "torchvision", "torchmetrics", "ray", "ray.tune", "ray.train", "optuna", "pandas",
                "trainables.models", "trainables.ray_trial", "trainables.features", "trainables.datasets",
                "orchestrator.sweep", "orchestrator.run", "orchestrator.spec", "orchestrator.tuners",
                "orchestrator.infer", "orchestrator.best", "orchestrator.rescore", "dashboards.build")
READY = "warm interpreter ready"


def startup_env(env: dict) -> dict:
    return {k: v for k, v in env.items()
            if (k in STARTUP or k.startswith(STARTUP_PREFIXES)) and k not in SET_IN_PROCESS}


def send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def serve(path: str) -> None:
    """Import, then fork one child per request on the Unix socket `path`; exit when stdin closes
    (the tests' process ended, however it ended)."""
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print(READY, flush=True)
    while True:
        readable = select.select([listener, sys.stdin], [], [])[0]
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            os._exit(0)
        if listener not in readable:
            continue
        conn, _ = listener.accept()
        try:
            request = json.loads(conn.makefile().readline())
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                run_child(conn, request)  # never returns
        except Exception as e:  # a bad request, or no fork: the client reads the closed connection as a crash
            print(f"request failed: {e!r}", flush=True)
        conn.close()


def run_child(conn: socket.socket, request: dict) -> None:
    """In the forked child: say its pid, become `python -m MODULE ARGS` in its cwd and environment,
    then say its exit code on the connection (a connection closed without one reads as a crash)."""
    import atexit
    import runpy
    import traceback

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command's own subprocesses are waited for
    os.setsid()  # its own process group, which a timeout kills whole
    os.register_at_fork(after_in_child=conn.close)  # what it forks must not hold the connection open
    send(conn, {"pid": os.getpid()})
    code = 1
    try:
        for fd, name in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
            if fd == 2 and name == request["stdout"]:
                os.dup2(1, 2)  # both streams in one file, as Popen(stderr=STDOUT)
                continue
            target = os.open(name, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = request["cwd"]  # what `python -m` puts first
        sys.argv = [request["module"], *request["args"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = int(e.code or 0) & 0xFF
            else:
                print(e.code, file=sys.stderr)
        except KeyboardInterrupt:
            traceback.print_exc()
            code = -signal.SIGINT  # as Python dies of an uncaught Ctrl-C
        except BaseException:
            traceback.print_exc()
        try:
            atexit._run_exitfuncs()
        except BaseException:
            traceback.print_exc()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # from here on the code is said, whatever comes
        sys.stdout.flush()
        sys.stderr.flush()
        send(conn, {"code": code})
    finally:
        os._exit(code & 0xFF)


class WarmProcess:
    """A command forked by the server, as much of subprocess.Popen as the tests use: pid,
    send_signal, poll, wait, kill and returncode. Its exit code comes on its connection; a child
    that died without saying one (SIGKILL, a crash) has returncode -9."""

    def __init__(self, conn: socket.socket, argv: list[str]):
        self.conn, self.args, self.returncode, self.buffer = conn, argv, None, b""
        said = self.message(timeout=60)
        self.pid = said["pid"] if said else None
        if self.pid is None:
            self.finish(None)

    def message(self, timeout: float | None) -> dict | None:
        """The next line on the connection; None where it closed first. select, not a socket file with
        a timeout: such a file refuses every read after its first timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if end is None else max(0.0, end - time.monotonic())
            if not select.select([self.conn], [], [], left)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            chunk = self.conn.recv(4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def finish(self, said: dict | None) -> None:
        self.returncode = said["code"] if said else -signal.SIGKILL
        self.conn.close()

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        if self.poll() is None:
            for kill, pid in ((os.killpg, self.pid), (os.kill, self.pid)):  # the group, or the child before setsid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.finish(self.message(timeout))
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(0)
        return self.returncode


class WarmCli:
    """The client: starts the server in the background; a command waits for it only when first needed."""

    def __init__(self, root: Path, env: dict):
        self.folder = Path(tempfile.mkdtemp(prefix="warm-cli-"))
        self.path = str(self.folder / "socket")
        self.env = env
        self.log = open(self.folder / "server.log", "w")
        # its stdin is a pipe from here: when this process ends, however it ends, the server does
        self.server = subprocess.Popen([sys.executable, __file__, self.path], cwd=root, env=env, stdout=self.log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.PIPE)
        self.ready = False
        self.forked, self.fresh = 0, collections.Counter()
        self.started: list = []

    def wait_ready(self, timeout: float = 120) -> bool:
        deadline = time.time() + timeout
        while not self.ready and time.time() < deadline and self.server.poll() is None:
            self.ready = READY in (self.folder / "server.log").read_text().splitlines()
            time.sleep(0 if self.ready else 0.05)
        return self.ready and self.server.poll() is None

    def warm(self, env: dict) -> bool:
        """Whether a command in `env` can be forked from the server (else: a real `python -m`, and
        the reason is counted for the session's summary)."""
        ours, theirs = startup_env(env), startup_env(self.env)
        if os.environ.get("ORCHESTRATOR_TEST_FRESH_CLI") == "1":
            reason = "ORCHESTRATOR_TEST_FRESH_CLI=1"
        elif ours != theirs:
            reason = "environment: " + ", ".join(sorted(k for k in ours.keys() | theirs.keys()
                                                        if ours.get(k) != theirs.get(k)))
        elif not self.wait_ready():
            reason = f"the server is not running ({self.folder / 'server.log'})"
        else:
            self.forked += 1
            return True
        self.fresh[reason] += 1
        return False

    def summary(self) -> str:
        fresh = "; ".join(f"{n} for {reason}" for reason, n in self.fresh.most_common())
        return f"commands forked from the warm interpreter: {self.forked}; fresh: {sum(self.fresh.values())}" + (
            f" ({fresh})" if fresh else "")

    def start(self, module: str, args: list[str], cwd: Path, env: dict, stdout: str, stderr: str):
        """`python -m MODULE ARGS` with its output in the files `stdout` and `stderr` (the same file for both
        is fine): a WarmProcess, or a subprocess.Popen where it can't be forked."""
        argv = [sys.executable, "-m", module, *args]
        if not self.warm(env):
            with open(stdout, "w") as out, contextlib.ExitStack() as files:
                err = subprocess.STDOUT if stderr == stdout else files.enter_context(open(stderr, "w"))
                process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
        else:
            conn = socket.socket(socket.AF_UNIX)
            conn.connect(self.path)
            send(conn, {"module": module, "args": list(args), "cwd": str(cwd), "env": env, "stdout": str(stdout),
                        "stderr": str(stderr)})
            process = WarmProcess(conn, argv)
        self.started.append(process)
        return process

    def run(self, module: str, args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        """What subprocess.run(capture_output=True, text=True, timeout=...) gives."""
        out, err = (self.temp_file(suffix) for suffix in (".out", ".err"))
        process = self.start(module, args, cwd, env, out, err)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise subprocess.TimeoutExpired(process.args, timeout, *self.collect(out, err)) from None
        finally:
            self.started.remove(process)
        return subprocess.CompletedProcess(process.args, process.returncode, *self.collect(out, err))

    def temp_file(self, suffix: str) -> str:
        handle, path = tempfile.mkstemp(dir=self.folder, suffix=suffix)
        os.close(handle)
        return path

    @staticmethod
    def collect(*paths: str) -> list[str]:
        texts = [Path(p).read_text(errors="replace") for p in paths]
        for p in paths:
            os.unlink(p)
        return texts

    def close(self) -> None:
        """Stop the server and any command still running, and remove the folder."""
        for process in self.started:
            process.kill()
        self.server.kill()
        self.server.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1])
