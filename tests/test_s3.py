"""Sweeps on S3, against a real S3 server (SeaweedFS, conftest.s3_server), as AWS users run them:
`--storage s3://BUCKET/PATH`, then `best`, `infer` and the dashboard straight from the bucket.

Checked here: one-worker in-process trials under ASHA, PBT, `--keep-checkpoints` pruning,
checkpoints complete only with their marker (a planted half-written one is never picked up), the
Optuna study in the bucket, the driver killed and `--resume`d, a killed trial process restarted by
Tune from its S3 checkpoint, the exit code of a sweep whose trials all failed, and bad storage
refused in one line before Ray starts. A two-worker TorchTrainer trial on S3 runs across two
nodes in test_cluster.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pyarrow.fs
import pytest

from conftest import assert_one_line_error, free_port, run_cli, start_cli
from trainables.experiment import load_experiment
from trainables.errors import BadInput
from trainables.ray_trial import TUNE_COPIES, TUNE_COPY
from trainables.layout import COMPLETE
from trainables.storage import location

pytestmark = pytest.mark.slow

SWEEP = ["--dataset", "digits", "--set", "width=8", "--eval-samples", "300", "--log-every", "10"]


def keys(s3_server, prefix: str) -> dict[str, int]:
    """Every object under BUCKET/prefix, by its key relative to it, with its size."""
    root = f"{s3_server['bucket']}/{prefix}"
    return {info.path[len(root) + 1:]: info.size
            for info in s3_server["fs"].get_file_info(pyarrow.fs.FileSelector(root, recursive=True,
                                                                             allow_not_found=True))
            if info.type == pyarrow.fs.FileType.File}


def checkpoint_folders(objects: dict[str, int]) -> dict[str, set[str]]:
    """checkpoints/<trial>/<checkpoint>: the files each checkpoint folder holds."""
    folders: dict[str, set[str]] = {}
    for key in objects:
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "checkpoints" and parts[2].startswith("checkpoint_"):
            folders.setdefault("/".join(parts[:3]), set()).add(parts[3])
    return folders


def study_trials(s3_server, prefix: str, tmp_path: Path) -> list[str]:
    """The states of the trials in the bucket's optuna.db."""
    copy = tmp_path / f"optuna-{time.time_ns()}.db"
    with s3_server["fs"].open_input_stream(f"{s3_server['bucket']}/{prefix}/optuna.db") as f:
        copy.write_bytes(f.read())
    with sqlite3.connect(copy) as db:
        return [state for (state,) in db.execute("select state from trials order by number")]


@pytest.fixture(scope="module")
def asha_sweep(ray_address, s3_server, tmp_path_factory):
    """A 4-trial ASHA sweep of in-process trials on S3, keeping 1 checkpoint per trial; run from
    an empty folder, which must stay empty (nothing lands on the local disk)."""
    cwd = tmp_path_factory.mktemp("cwd")
    uri = f"s3://{s3_server['bucket']}/exps/asha"
    proc = run_cli("orchestrator.sweep", "dcgan", *SWEEP, "--trials", "4", "--max-steps", "80", "--eval-every", "20",
                   "--keep-checkpoints", "1", "--storage", uri.rsplit("/", 1)[0], "--name", "asha",
                   "--address", ray_address, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return uri, proc, cwd


def test_an_asha_sweep_on_s3_keeps_everything_in_the_bucket(asha_sweep, s3_server, tmp_path):
    uri, proc, cwd = asha_sweep
    assert not any(cwd.iterdir()), list(cwd.iterdir())  # no local ./experiments
    objects = keys(s3_server, "exps/asha")
    for name in ("sweep.json", "optuna.db", "dashboard.html"):
        assert objects.get(name, 0) > 0, (name, sorted(objects))
    assert study_trials(s3_server, "exps/asha", tmp_path) == ["COMPLETE"] * 4
    folders = checkpoint_folders(objects)
    assert folders and all({COMPLETE, "model.safetensors", "metrics.json", "config.json"} <= files
                           for files in folders.values()), folders
    per_trial: dict[str, int] = {}
    for folder in folders:
        per_trial[folder.split("/")[1]] = per_trial.get(folder.split("/")[1], 0) + 1
    assert len(per_trial) == 4 and max(per_trial.values()) <= 2, per_trial  # the best 1 + the latest
    assert f"best checkpoint: {uri}/checkpoints/" in proc.stdout
    assert f"python -m orchestrator.best {uri}" in proc.stdout


def test_best_infer_and_dashboard_read_the_bucket_directly(asha_sweep, tmp_path):
    uri, _, _ = asha_sweep
    proc = run_cli("orchestrator.best", uri, "--top", "2", "--dst", str(tmp_path / "best"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "best" / "best.json").read_text())
    ranked = summary["checkpoints"]
    assert len(ranked) == 2 and ranked[0]["fid"] <= ranked[1]["fid"]
    assert all(c["source"].startswith(f"{uri}/checkpoints/") for c in ranked)
    assert (Path(ranked[0]["path"]) / "model.safetensors").stat().st_size > 0

    proc = run_cli("orchestrator.infer", ranked[0]["source"], "sample", "--n", "16", "--out", str(tmp_path / "s.png"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.png").stat().st_size > 0

    proc = run_cli("dashboards.build", uri, "--out", str(tmp_path / "page.html"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "page.html").read_text()
    assert uri in page  # the page says where the experiment is

    missing = run_cli("orchestrator.best", f"{uri}-missing")
    assert_one_line_error(missing, "does not exist")


def test_a_half_written_checkpoint_in_the_bucket_is_never_picked_up(asha_sweep, s3_server):
    """A trial killed while uploading leaves files without the marker: best, the dashboard and a
    restarted trial all ignore it (and the restarted trial deletes it)."""
    from test_in_process_checkpoints import session

    uri, _, _ = asha_sweep
    exp = load_experiment(uri)
    trial, best = exp.ranked_checkpoints()[0]
    fs = s3_server["fs"]
    running = session(f"{uri}/checkpoints", trial.trial_id, 1)
    source = location(str(exp.where(best.path)))
    half = source.path.rsplit("/", 1)[0] + "/checkpoint_2099-01-01_00-00-00.000000"  # the newest name
    for name in ("config.json", "model.safetensors"):
        fs.copy_file(f"{source.path}/{name}", f"{half}/{name}")
    with fs.open_output_stream(f"{half}/metrics.json") as f:
        f.write(json.dumps({**best.metrics, "fid": 0.001, "step": 999}).encode())  # better than any real one

    again = load_experiment(uri)
    assert all(c.step != 999 for _, c in again.ranked_checkpoints())
    with running.own_checkpoint() as folder:  # a trial resuming now takes a complete one, downloaded
        assert json.loads((folder / "metrics.json").read_text())["step"] != 999
    session(f"{uri}/checkpoints", trial.trial_id, 1)  # the trial's next run clears it
    assert fs.get_file_info(f"{half}/metrics.json").type == pyarrow.fs.FileType.NotFound


def test_the_winners_are_rescored_from_the_bucket_and_best_follows(asha_sweep, s3_server, ray_address, tmp_path):
    uri, _, _ = asha_sweep
    proc = run_cli("orchestrator.rescore", uri, "--top", "2", "--seeds", "2", "--samples", "200",
                   "--address", ray_address, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"written: {uri}/rescore.json" in proc.stdout
    assert keys(s3_server, "exps/asha").get("rescore.json", 0) > 0 and not any(tmp_path.iterdir())
    report = json.loads(location(f"{uri}/rescore.json").read_text())
    assert len(report["checkpoints"]) == 2 and all(len(e["values"]) == 2 for e in report["checkpoints"])
    proc = run_cli("orchestrator.best", uri, "--top", "2", "--dst", str(tmp_path / "best"))
    assert proc.returncode == 0 and "ranked by the re-scored mean" in proc.stdout, proc.stderr
    exported = json.loads((tmp_path / "best" / "best.json").read_text())["checkpoints"]
    assert [c["source"] for c in exported] == [f"{uri}/{e['checkpoint']}" for e in report["checkpoints"]]
    location(f"{uri}/rescore.json").delete_file()  # the other tests of this sweep rank by its own readings


def test_a_pbt_sweep_on_s3(ray_address, s3_server, tmp_path):
    """PBT of in-process trials, whose checkpoints Tune copies into the bucket. (A two-worker
    TorchTrainer trial on S3, where Ray Train writes the checkpoints and the trial marks them
    complete: test_cluster.py, across two nodes.)"""
    storage = f"s3://{s3_server['bucket']}/exps"
    pbt = run_cli("orchestrator.sweep", "dcgan", *SWEEP, "--trials", "2", "--max-steps", "80", "--eval-every", "20",
                  "--scheduler", "pbt", "--storage", storage, "--name", "pbt", "--address", ray_address,
                  "--no-dashboard", cwd=tmp_path)
    assert pbt.returncode == 0, pbt.stdout[-4000:] + pbt.stderr[-4000:]
    exp = load_experiment(f"{storage}/pbt")
    assert len(exp.trials) == 2 and all(t.last_step == 80 for t in exp.trials)
    # Tune's copies of the checkpoints it was given (4 per trial), bounded to the newest TUNE_COPIES
    copies: dict[str, set[str]] = {}
    for key in keys(s3_server, "exps/pbt"):
        parts = key.split("/")
        if parts[0].startswith("run_trial_") and len(parts) > 2 and TUNE_COPY.match(parts[1]):
            copies.setdefault(parts[0], set()).add(parts[1])
    assert len(copies) == 2 and all(0 < len(c) <= TUNE_COPIES for c in copies.values()), copies
    assert not list(tmp_path.iterdir())  # nothing on the local disk


def _checkpointed_trials(uri: str) -> int:
    try:
        trials = load_experiment(uri).trials
    except BadInput:  # the experiment or its sweep.json not written yet
        return 0
    return sum(1 for t in trials if t.checkpoints and t.last_step >= t.checkpoints[0].step)


def test_a_killed_driver_resumes_from_s3(ray_address, s3_server, cache_dir, tmp_path):
    """The driver is SIGKILLed once both trials have a checkpoint in the bucket; --resume, run as
    from another machine (another cache folder, so no working copy of the study and another path
    for it than the pickled searcher names), continues them from those checkpoints, and the study
    in the bucket ends with both trials."""
    storage = f"s3://{s3_server['bucket']}/exps"
    uri = f"{storage}/cut"
    args = ["dcgan", *SWEEP, "--set", "batch_size=64", "--trials", "2", "--max-steps", "400", "--eval-every", "50",
            "--scheduler", "fifo", "--storage", storage, "--name", "cut", "--address", ray_address, "--no-dashboard"]
    driver = start_cli("orchestrator.sweep", *args, cwd=tmp_path, output=tmp_path / "driver.log")
    deadline = time.time() + 300
    while time.time() < deadline and _checkpointed_trials(uri) < 2:
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    before = {t.trial_id: max(c.step for c in t.checkpoints) for t in load_experiment(uri).trials}
    assert len(before) == 2 and all(0 < step < 400 for step in before.values()), before

    other_cache = tmp_path / "other-cache"  # the feature network, not the study
    shutil.copytree(cache_dir, other_cache, ignore=shutil.ignore_patterns("studies", "remote"))
    proc = run_cli("orchestrator.sweep", "dcgan", "--resume", "--name", "cut", "--storage", storage, "--address",
                   ray_address, "--no-dashboard", cwd=tmp_path, env={"ORCHESTRATOR_CACHE": str(other_cache)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (other_cache / "studies").is_dir()
    exp = load_experiment(uri)
    for trial in exp.trials:
        assert trial.last_step == 400 and not trial.error
        # the resumed run (told by its process: see test_sweep's resume test) started at a checkpoint
        # at least as new as the one seen before the kill, not at step 0
        # (a checkpoint the killed run wrote but Tune never logged is in the history as its metrics.json,
        # without Tune's fields such as pid: trainables.experiment.with_checkpoint_reports)
        rows = [json.loads(line) for line in (trial.path / "result.json").read_text().splitlines()]
        resumed = [r["step"] for r in rows if r.get("pid") == rows[-1]["pid"]]
        assert resumed[-1] == 400 and resumed[0] > before[trial.trial_id], (before, resumed[:3])
    assert study_trials(s3_server, "exps/cut", tmp_path) == ["COMPLETE", "COMPLETE"]


def test_a_sweep_whose_trials_all_fail_on_s3_exits_1(ray_address, s3_server, tmp_path):
    """Every trial diverges (lr 10: the VAE's loss is infinite within two steps) before its first
    checkpoint: exit 1 and one line that says how many errored."""
    storage = f"s3://{s3_server['bucket']}/exps"
    proc = run_cli("orchestrator.sweep", "vae", "--dataset", "digits", "--set", "arch=mlp", "--set", "lr=10",
                   "--trials", "2", "--max-steps", "40", "--eval-every", "20", "--log-every", "10",
                   "--eval-samples", "300", "--scheduler", "fifo", "--storage", storage,
                   "--name", "fail", "--address", ray_address, "--no-dashboard", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 of 2 trials errored" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("case", ["no bucket", "wrong key", "no server"])
def test_bad_storage_is_refused_in_one_line_before_ray_starts(s3_server, tmp_path, case):
    storage = f"s3://{s3_server['bucket']}/exps"
    env = {}
    if case == "no bucket":
        storage, fragment = "s3://no-such-bucket/exps", "does not exist"
    elif case == "wrong key":
        env, fragment = {"AWS_SECRET_ACCESS_KEY": "wrong"}, "check the credentials"
    else:
        env, fragment = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "ORCHESTRATOR_REACH_SECONDS": "2"}, \
            "check the endpoint"
    start = time.time()
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--storage", storage, "--name", "bad",
                   "--address", "127.0.0.1:1", timeout=120, cwd=tmp_path, env=env)  # no cluster there: Ray never starts
    assert_one_line_error(proc, fragment)
    assert time.time() - start < 30


def test_the_mirror_follows_the_bucket_and_skips_weights_pickles_and_folder_markers(s3_server, tmp_path):
    """pull(): only new or changed files come, files gone from the bucket go from the mirror, S3's
    directory-marker keys (pyarrow's create_dir makes them) are no files, Tune's pickles never
    come, and weights only when asked."""
    from trainables.storage import pull

    fs, root = s3_server["fs"], f"{s3_server['bucket']}/mirror"
    fs.create_dir(f"{root}/empty/inner")  # directory markers only
    for key, data in {"a.json": b"{}", "ck/metrics.json": b"{}", "ck/model.safetensors": b"w" * 10,
                      "tuner.pkl": b"pickle", "gone.txt": b"x"}.items():
        with fs.open_output_stream(f"{root}/{key}") as f:
            f.write(data)
    loc = location(f"s3://{root}")
    mirror = pull(loc, tmp_path / "m")
    files = sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file())
    assert files == ["a.json", "ck/metrics.json", "gone.txt"], files
    inode = (mirror / "a.json").stat().st_ino  # a download replaces the file: a new inode

    fs.delete_file(f"{root}/gone.txt")
    pull(loc / "ck", mirror / "ck", weights=True)
    pull(loc, mirror)
    files = sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file())
    assert files == ["a.json", "ck/metrics.json", "ck/model.safetensors"], files
    assert (mirror / "a.json").stat().st_ino == inode  # unchanged: not downloaded again


def test_a_killed_trial_process_restarts_from_its_s3_checkpoint(ray_cluster, ray_address, s3_server, tmp_path):
    """The one-worker trial's own process is SIGKILLed after its first checkpoint reached the
    bucket: Tune restarts the trial, which downloads that checkpoint and goes on from it."""
    from test_faults import _assert_went_on_from, _raylet_children, _wait_for

    storage = f"s3://{s3_server['bucket']}/exps"
    uri = f"{storage}/kill"
    args = ["dcgan", *SWEEP, "--trials", "1", "--max-steps", "400", "--eval-every", "50", "--log-every", "25",
            "--scheduler", "fifo", "--storage", storage, "--name", "kill", "--address", ray_address, "--no-dashboard"]
    log = tmp_path / "driver.log"
    driver = start_cli("orchestrator.sweep", *args, cwd=tmp_path, output=log)
    def complete_checkpoints() -> list[str]:
        """The bucket's complete checkpoints (read there: Tune copies result.json up only now and then)."""
        return [folder for folder, files in checkpoint_folders(keys(s3_server, "exps/kill")).items()
                if COMPLETE in files]

    try:
        _wait_for(complete_checkpoints, "the trial's first checkpoint in the bucket")
        (worker,) = _raylet_children(ray_cluster, "ray::ImplicitFunc")
        checkpoint_step = max(json.loads(location(f"{uri}/{folder}/metrics.json").read_text())["step"]
                              for folder in complete_checkpoints())
        os.kill(worker, signal.SIGKILL)
        driver.wait(timeout=600)
    finally:
        driver.kill()
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    (trial,) = load_experiment(uri).trials
    assert trial.status(400) == "finished"
    _assert_went_on_from(trial, checkpoint_step, 400, 25)
