"""Faults a sweep must survive, on the session's real local Ray cluster, with tiny budgets:
a diverging trial, a training worker killed mid-trial, a worker node lost mid-sweep, a storage
that fills up. (A killed driver and `--resume`, and checkpoints bounded by --keep-checkpoints:
tests/test_sweep.py; the same on S3, and a killed trial process: tests/test_s3.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from conftest import diverging_sweep, run_cli, start_cli
from trainables.experiment import load_experiment

pytestmark = pytest.mark.slow


def test_a_diverging_trial_ends_errored_with_its_reason_and_the_sweep_goes_on(ray_address, tmp_path):
    proc = diverging_sweep(ray_address, tmp_path, "--scheduler", "fifo")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = load_experiment(tmp_path / "nan")
    by_lr = {t.trial_id: t.params["lr"] for t in exp.trials}
    # seed 0 draws both; the VAE's default lr 1e-3 lies outside the space, so no trial is the defaults
    assert sorted(set(by_lr.values())) == [0.002, 10.0], by_lr
    for trial in exp.trials:
        if trial.params["lr"] == 10.0:
            assert trial.status(40) == "errored"
            assert "became NaN or infinite by step 10" in trial.error and "lower the learning rate" in trial.error
            assert trial.last_step == 10 and not trial.checkpoints  # stopped at the first check, saved nothing
        else:
            assert trial.status(40) == "finished" and trial.checkpoints
    # the searcher was told: diverged trials are pruned (ranked below every complete one), not ignored
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{tmp_path}/nan/optuna.db")
    states = {t.params["lr"]: t.state for t in study.trials}
    assert states == {10.0: optuna.trial.TrialState.PRUNED, 0.002: optuna.trial.TrialState.COMPLETE}, states
    page = (tmp_path / "nan" / "dashboard.html").read_text()
    assert "became NaN or infinite" in page and "errored" in page


def _raylet_children(ray_cluster, name: str) -> list[int]:
    """PIDs of the processes titled `name` that the session cluster's raylets started."""
    from ray._private import ray_constants

    raylets = {p.process.pid for node in ray_cluster.list_all_nodes()
               for p in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, [])}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent in raylets and name in title:
            pids.append(int(proc.name))
    return pids


def _wait_for(condition, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _start_sweep(args: list[str], folder: Path) -> tuple[subprocess.Popen, Path]:
    """`orchestrator.sweep ARGS` in the background, its output in a file (a pipe could fill and block it)."""
    log = folder / "driver.log"
    return start_cli("orchestrator.sweep", *args, output=log), log


def _checkpoint_steps(path: Path) -> list[int]:
    return sorted(json.loads(m.read_text())["step"] for m in path.glob("checkpoints/*/checkpoint_*/metrics.json"))


def _assert_went_on_from(trial, checkpoint_step: int, max_steps: int, log_every: int) -> None:
    """The trial ran to the end after a restart from the checkpoint it had at the fault: no report
    up to that step came twice (from step 0 again, it would), every step was reported."""
    steps = [r["step"] for r in trial.results]
    assert checkpoint_step > 0 and not trial.error, (checkpoint_step, trial.error)
    assert all(steps.count(s) == 1 for s in steps if s <= checkpoint_step), (checkpoint_step, steps)
    assert sorted(set(steps)) == list(range(0, max_steps + 1, log_every)), steps


def test_a_killed_training_worker_restarts_from_the_last_checkpoint(ray_cluster, ray_address, tmp_path):
    """A TorchTrainer's worker is SIGKILLed: the trainer restarts its worker group, which goes on
    from the last checkpoint. (A one-worker trial's own process killed, which Tune restarts:
    tests/test_s3.py, from its checkpoint in the bucket.)"""
    process = "RayTrainWorker"
    args = ["dcgan", "--dataset", "digits", "--set", "width=8", "--trials", "1", "--max-steps", "400",
            "--eval-every", "50", "--log-every", "25", "--eval-samples", "300", "--scheduler", "fifo",
            "--storage", str(tmp_path), "--name", "kill", "--address", ray_address, "--no-dashboard",
            "--torch-trainer"]
    driver, log = _start_sweep(args, tmp_path)
    path = tmp_path / "kill"
    try:
        _wait_for(lambda: _checkpoint_steps(path), "the trial's first checkpoint")
        (worker,) = _raylet_children(ray_cluster, process)
        checkpoint_step = max(_checkpoint_steps(path))
        os.kill(worker, signal.SIGKILL)
        _wait_for(lambda: set(_raylet_children(ray_cluster, process)) - {worker}, "a new training process")
        driver.wait(timeout=600)
    finally:
        driver.kill()
    assert driver.returncode == 0, log.read_text()[-3000:]
    (trial,) = load_experiment(path).trials
    assert trial.status(400) == "finished"
    _assert_went_on_from(trial, checkpoint_step, 400, 25)


def test_a_lost_worker_node_moves_its_trial_to_the_remaining_nodes(ray_cluster, ray_address, tmp_path):
    """Two 2-CPU nodes join; the head is kept busy, so the two trials (1.5 CPUs each; their
    drivers' slivers may land anywhere) run one on each. One node is removed mid-trial: its trial
    resumes from its last checkpoint on the node that remains."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [ray_cluster.add_node(num_cpus=2) for _ in range(2)]
    ray_cluster.wait_for_nodes()
    ray.init(address=ray_address, logging_level="WARNING")
    try:
        head = ray_cluster.head_node.node_id
        # all of the head's CPUs but the trial drivers' slivers
        hold = ray.remote(num_cpus=2.9)(lambda: time.sleep(3600)).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
        args = ["dcgan", "--dataset", "digits", "--set", "width=8", "--trials", "2", "--max-steps", "300",
                "--eval-every", "50", "--log-every", "25", "--eval-samples", "300", "--scheduler", "fifo",
                "--cpus-per-worker", "1.5", "--max-concurrent", "2", "--storage", str(tmp_path), "--name", "node",
                "--address", ray_address, "--no-dashboard"]
        driver, log = _start_sweep(args, tmp_path)
        path = tmp_path / "node"
        try:
            def trial_on_each_node():
                first = {}
                for ckpt in sorted(path.glob("checkpoints/*/checkpoint_*/config.json")):
                    first.setdefault(ckpt.parent.parent.name, json.loads(ckpt.read_text())["worker_nodes"][0])
                return first if len(set(first.values())) == 2 else None

            placed = _wait_for(trial_on_each_node, "a checkpoint of a trial on each node")
            doomed = next(n for n in nodes if n.node_id in placed.values())
            moved = next(trial for trial, node in placed.items() if node == doomed.node_id)
            checkpoint_step = max(json.loads(m.read_text())["step"]
                                  for m in path.glob(f"checkpoints/{moved}/checkpoint_*/metrics.json"))
            ray_cluster.remove_node(doomed)
            driver.wait(timeout=900)
        finally:
            driver.kill()
        assert driver.returncode == 0, log.read_text()[-3000:]
        exp = load_experiment(path)
        assert len(exp.trials) == 2 and all(t.status(300) == "finished" for t in exp.trials), \
            [(t.trial_id, t.status(300), t.error) for t in exp.trials]
        (trial,) = [t for t in exp.trials if t.trial_id == moved]
        _assert_went_on_from(trial, checkpoint_step, 300, 25)
        last = json.loads(trial.checkpoints[-1].path.joinpath("config.json").read_text())["worker_nodes"]
        assert doomed.node_id not in last, "the moved trial's last checkpoint came from the removed node"
        ray.cancel(hold, force=True)
    finally:
        ray.shutdown()
        for node in nodes:
            if node in ray_cluster.worker_nodes:
                ray_cluster.remove_node(node)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: room for Tune's files and a checkpoint or two of a digits DCGAN, not more."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_sweep_cleanly_and_resume_finishes_it(ray_address, small_disk):
    """The storage fills up at a checkpoint: the trials stop as Ctrl-C would stop them, one line
    says what is full and how much was needed, no traceback, exit 1, every kept checkpoint is
    complete; once the disk is bigger (remounted in place), --resume finishes the sweep."""
    args = ["--storage", str(small_disk), "--name", "full", "--address", ray_address]
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--trials", "1", "--max-steps", "200",
                   "--eval-every", "20", "--log-every", "10", "--eval-samples", "300", "--keep-checkpoints", "1",
                   "--scheduler", "fifo", *args)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    full = rf"storage {small_disk} is full: a checkpoint of [\d.]+ MB did not fit, [\d.]+ MB free"
    assert re.search(full, last), last
    assert "--resume" in last
    (trial,) = load_experiment(small_disk / "full").trials
    stopped_at = trial.last_step
    assert 0 < stopped_at < 200 and trial.checkpoints, stopped_at
    folders = list((small_disk / "full" / "checkpoints" / trial.trial_id).iterdir())
    assert all((f / "complete.json").is_file() for f in folders), folders  # nothing half-written is left

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    proc = run_cli("orchestrator.sweep", "dcgan", "--resume", *args, "--no-dashboard")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (trial,) = load_experiment(small_disk / "full").trials
    assert trial.status(200) == "finished" and trial.checkpoints[-1].step == 200
