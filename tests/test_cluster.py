"""The cluster configs users copy, and sweeps across several Ray nodes.

The configs are checked by Ray's own validation (what Ray's test-suite runs on its example YAMLs).
The multi-node sweeps run on the session's Ray with a second node added (two raylets on one
machine, as ray.cluster_utils.Cluster makes them): trials must land on both nodes, and a trial
with two DDP workers must span them (storing on S3, as such clusters do). Which node each worker
ran on is in every checkpoint's config.json (`worker_nodes`).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trainables.experiment import load_experiment
from trainables.layout import COMPLETE
from orchestrator.cluster import autoscaler_capacity
from conftest import ROOT, assert_one_line_error, run_cli

CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]


@pytest.fixture(scope="module")
def family_on_two_nodes(ray_address, second_node, tmp_path_factory):
    """examples/own_model.ipynb, executed cell by cell by nbclient in an IPython kernel (as Jupyter
    runs it) in a folder of its own, joining the two-node cluster at $RAY_ADDRESS: run_sweep ships
    the folder's wgan_gp.py (examples/wgan_gp.py, which here also writes down every file it is
    imported from) to both nodes. Two trials of 2 CPUs each: the head (3 CPUs) fits one, the second
    node (2) the other. Returns the experiment, the family's file, that list, and the notebook's
    code cells' outputs."""
    import nbclient
    import nbformat

    tmp_path = tmp_path_factory.mktemp("family")
    family = tmp_path / "my_models" / "wgan_gp.py"
    family.parent.mkdir()
    imported = tmp_path / "imported-from.txt"
    family.write_text((ROOT / "examples" / "wgan_gp.py").read_text()
                      + f"\nwith open({str(imported)!r}, 'a') as _f:\n    _f.write(__file__ + '\\n')\n")
    shutil.copy(ROOT / "examples" / "wgan_gp.toml", family.parent)
    notebook = nbformat.read(ROOT / "examples" / "own_model.ipynb", as_version=4)
    env = {"EXAMPLE_STORAGE": str(tmp_path), "RAY_ADDRESS": ray_address, "EXAMPLE_CPUS_PER_WORKER": "2"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():  # the kernel inherits this process's environment
            patch.setenv(key, value)
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(family.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    (path,) = tmp_path.glob("wgan_gp-digits-*")
    return path, family, imported, outputs


def test_the_example_notebook_sweeps_its_family_on_both_nodes_under_a_real_kernel(family_on_two_nodes, second_node):
    """The notebook runs without an error, its sweep exits 0, and it shows the leaderboard and the
    best checkpoint's samples as an image; its trials ran on both nodes."""
    path, _, _, outputs = family_on_two_nodes
    assert not [o for o in outputs if o.output_type == "error"]
    results = [o for o in outputs if o.output_type == "execute_result"]
    assert results[0]["data"]["text/plain"] == "0"  # the sweep's exit code
    assert "<table" in results[1]["data"]["text/html"] and "gp_weight" in results[1]["data"]["text/html"]
    assert "image/png" in results[-1]["data"]
    nodes = {n for ckpts in worker_nodes(path).values() for ckpt in ckpts for n in ckpt}
    assert second_node.node_id in nodes and len(nodes) == 2, nodes


def test_trials_of_one_sweep_run_on_two_nodes(family_on_two_nodes, second_node):
    path, _, _, _ = family_on_two_nodes
    nodes = worker_nodes(path)
    assert len(nodes) == 2 and all(nodes.values()), nodes
    per_trial = {trial: {n for ckpt in ckpts for n in ckpt} for trial, ckpts in nodes.items()}
    assert all(len(n) == 1 for n in per_trial.values()), per_trial  # one worker, one node each
    assert len(set.union(*per_trial.values())) == 2, f"both trials ran on one node: {per_trial}"
    assert second_node.node_id in set.union(*per_trial.values())


def test_a_family_of_the_users_own_runs_on_both_nodes_through_rays_runtime_env(family_on_two_nodes, ray_address,
                                                                             tmp_path):
    """The family module is shipped to every node (runtime_env py_modules), where the trials import
    it from Ray's copy, not from its folder; then the CLI's resume, best, infer, rescore (Ray tasks
    on the cluster) and the dashboard work on its results. (It changes the experiment: last.)"""
    path, family, imported, _ = family_on_two_nodes
    assert str(family) in imported.read_text().split()  # the notebook's kernel
    # its resume needs no --family-module: the family comes from where sweep.json recorded it. (Run
    # from another folder: Ray puts its driver's folder on the trials' sys.path, as it did the
    # notebook's, and a trial would import the module from there, on one machine.)
    before = len(imported.read_text().split())
    proc = run_cli("orchestrator.sweep", "wgan_gp", "--resume", "--name", path.name, "--storage", str(path.parent),
                   "--trials", "3", "--address", ray_address, "--max-concurrent", "1", cwd=tmp_path)
    assert proc.returncode == 0 and len(load_experiment(path).trials) == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    copies = imported.read_text().split()[before:]
    assert str(family) in copies  # the resumed driver
    shipped = [c for c in copies if "runtime_resources" in c and "py_modules_files" in c]
    assert shipped, copies  # the new trial: Ray's copy of the module on its node
    exported = tmp_path / "best"
    assert run_cli("orchestrator.best", str(path), "--top", "1", "--dst", str(exported)).returncode == 0
    (checkpoint,) = exported.glob("rank1-*")
    grid = tmp_path / "samples.png"
    proc = run_cli("orchestrator.infer", str(checkpoint), "sample", "--n", "8", "--out", str(grid), cwd=tmp_path)
    assert proc.returncode == 0 and grid.is_file(), proc.stderr
    proc = run_cli("orchestrator.rescore", str(path), "--top", "1", "--seeds", "2", "--address", ray_address,
                   cwd=tmp_path)
    assert proc.returncode == 0 and "re-scored (2 seeds" in proc.stdout, proc.stdout + proc.stderr
    proc = run_cli("dashboards.build", str(path), cwd=tmp_path)
    assert proc.returncode == 0 and (path / "dashboard.html").is_file(), proc.stderr
    family.unlink()  # a checkpoint whose family is gone: refused in one line, --family-module points elsewhere
    assert_one_line_error(run_cli("orchestrator.infer", str(checkpoint), "sample", "--out", str(grid), cwd=tmp_path),
                          "model family 'wgan_gp' came from", "--family-module")
    proc = run_cli("orchestrator.infer", str(checkpoint), "sample", "--out", str(grid), "--family-module",
                   str(ROOT / "examples" / "wgan_gp.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_config_passes_rays_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # raises on an invalid config

    head = config["available_node_types"][config["head_node_type"]] if "available_node_types" in config else None
    if head is not None:
        assert head["resources"] == {"CPU": 0}, "trials must not be scheduled on the head by default"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c), "token authentication stays on"
    assert not any("0.0.0.0" in c for c in starts), "the dashboard must not listen on a public interface"
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_aws_config_scales_gpu_workers_from_zero_with_spot():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    workers = [t for n, t in config["available_node_types"].items() if n != config["head_node_type"]]
    assert workers and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers)
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in workers)


def test_autoscaler_capacity_counts_what_the_cluster_may_grow_to(tmp_path):
    """The sweep sizes its concurrency to the GPUs the autoscaler may add, not only those up now
    (a `ray up` cluster starts with no GPU worker)."""
    config = {"head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}, "min_workers": 0, "max_workers": 4},
        "big": {"resources": {"CPU": 48, "GPU": 8}, "max_workers": 1}}}
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert autoscaler_capacity("GPU", path) == 12
    assert autoscaler_capacity("CPU", path) == 64
    assert autoscaler_capacity("GPU", tmp_path / "missing.yaml") == 0
    path.write_text("just: [text")
    assert autoscaler_capacity("GPU", path) == 0


@pytest.fixture(scope="module")
def second_node(ray_cluster):
    """A second Ray node (2 CPUs) beside the session's head (3 CPUs), for this module's sweeps."""
    node = ray_cluster.add_node(num_cpus=2)
    ray_cluster.wait_for_nodes()
    yield node
    ray_cluster.remove_node(node)
    ray_cluster.wait_for_nodes()


def worker_nodes(exp_path: Path | str) -> dict[str, list[list[str]]]:
    """trial id -> the worker node ids recorded in each of its checkpoints."""
    exp = load_experiment(exp_path)
    return {t.trial_id: [json.loads((c.path / "config.json").read_text())["worker_nodes"] for c in t.checkpoints]
            for t in exp.trials}


def test_ddp_trial_spans_two_nodes_and_checkpoints_into_s3(ray_address, second_node, s3_server, tmp_path):
    """2 workers x 2 CPUs fit neither node alone: one worker runs on each, DDP over gloo between
    them, storing on S3 as a cluster of several machines does: Ray Train writes the checkpoints
    into the bucket, the trial marks them complete, and nothing lands on the local disk."""
    from test_s3 import checkpoint_folders, keys

    storage = f"s3://{s3_server['bucket']}/nodes"
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--set", "width=8", "--workers-per-trial",
                   "2", "--cpus-per-worker", "2", "--trials", "1", "--max-steps", "40", "--eval-every", "20",
                   "--log-every", "10", "--eval-samples", "500", "--scheduler", "fifo", "--storage", storage,
                   "--name", "ddp", "--address", ray_address, "--no-dashboard", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (trial,) = load_experiment(f"{storage}/ddp").trials
    assert [c.step for c in trial.checkpoints] == [20, 40] and trial.status(40) == "finished" and not trial.error
    assert all(COMPLETE in files for files in checkpoint_folders(keys(s3_server, "nodes/ddp")).values())
    assert not list(tmp_path.iterdir())  # nothing on the local disk
    for ckpt in worker_nodes(f"{storage}/ddp")[trial.trial_id]:
        assert len(ckpt) == 2 and len(set(ckpt)) == 2, f"the two DDP workers ran on one node: {ckpt}"
    fids = [r["fid"] for r in trial.results if r.get("fid") == r.get("fid") and r.get("fid") is not None]
    assert fids[-1] < fids[0], fids


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_configs_set_the_default_storage_on_every_node(name):
    """`python -m orchestrator.sweep MODEL` on the cluster, with no --storage, must write to shared
    storage: the setup commands (run on every node before Ray starts) export ORCHESTRATOR_STORAGE."""
    config = yaml.safe_load((ROOT / name).read_text())
    (line,) = [c for c in config["setup_commands"] if "ORCHESTRATOR_STORAGE=" in c]
    value = line.rsplit("ORCHESTRATOR_STORAGE=", 1)[1].split("'", 1)[0]
    assert value.startswith("s3://CHANGE-ME/") if name == "cluster.yaml" else value.startswith("/")
    assert "~/.bashrc" in line


@pytest.mark.slow
def test_a_local_storage_that_another_node_does_not_see_is_refused(ray_cluster, ray_address, tmp_path):
    """A second node started in its own mount namespace, with an empty tmpfs over the storage
    path, plays a machine with a disk of its own: the sweep refuses, exit 2, naming the flag to
    pass, and writes no experiment there."""
    import ray

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (util-linux) for a mount namespace")
    storage = tmp_path / "experiments"
    storage.mkdir()
    ray_bin = Path(sys.executable).parent / "ray"
    ray.init(address=ray_address, logging_level="WARNING")
    before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}  # a node an earlier test removed may still be listed
    log = (tmp_path / "node.log").open("w")
    node = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs tmpfs {storage} && exec {ray_bin} start --address={ray_address} --num-cpus=1 --block"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not {n["NodeID"] for n in ray.nodes() if n["Alive"]} - before:
            assert time.time() < deadline and node.poll() is None, (tmp_path / "node.log").read_text()[-2000:]
            time.sleep(0.5)
        proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--trials", "1", "--max-steps", "20",
                       "--eval-every", "20", "--storage", str(storage), "--name", "own-disk", "--address", ray_address)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert "don't see it" in last and "--storage s3://" in last, last
        assert not list(storage.iterdir())  # no sweep.json, no marker left
    finally:
        ray.shutdown()
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
        log.close()
