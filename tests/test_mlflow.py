"""MLflow against a real tracking server (`mlflow server` with an SQLite store, started here): a
sweep's trials as runs (`--mlflow`), the best checkpoint as a registered model version that infer
loads back from a download, and an unreachable server refused in one line before Ray starts."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from seaweedfs import free_port
from trainables.experiment import load_experiment

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{folder}/mlflow.db", "--default-artifact-root", str(folder / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None and time.time() < deadline, (folder / "server.log").read_text()[-3000:]
            time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def tracked(ray_address, mlflow_server, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tracked")
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--set", "width=8", "--trials", "2",
                   "--max-steps", "40", "--eval-every", "20", "--log-every", "10", "--eval-samples", "300",
                   "--scheduler", "fifo",
                   "--storage", str(storage), "--name", "tracked", "--address", ray_address, "--no-dashboard",
                   "--mlflow", mlflow_server)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return storage / "tracked"


def test_each_trial_is_an_mlflow_run_with_params_metrics_by_step_samples_and_status(tracked, mlflow_server):
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    exp = load_experiment(tracked)
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(t.trial_id for t in exp.trials)
    for run in runs:
        trial = next(t for t in exp.trials if t.trial_id == run.data.tags["trial_id"])
        assert run.data.tags["status"] == "finished" and run.data.tags["sweep"] == "tracked"
        assert run.info.status == "FINISHED"
        assert float(run.data.params["lr_g"]) == pytest.approx(trial.params["lr_g"])
        fid = client.get_metric_history(run.info.run_id, "fid")
        assert sorted(m.step for m in fid) == [0, 20, 40]  # the trial's own steps, not Tune's report count
        assert [m.value for m in sorted(fid, key=lambda m: m.step)] == pytest.approx(trial.curve("fid")[1])
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss_g")) == [10, 20, 30, 40]
        grids = [a.path for folder in client.list_artifacts(run.info.run_id, "samples")
                 for a in client.list_artifacts(run.info.run_id, folder.path)]
        assert len(grids) == len(trial.checkpoints) and all(g.endswith("samples.png") for g in grids), grids


def test_the_best_checkpoint_registers_as_a_model_version_that_infer_loads(tracked, mlflow_server, tmp_path):
    proc = run_cli("orchestrator.best", str(tracked), "--dst", str(tmp_path / "best"),
                   "--register-mlflow", mlflow_server, "--model-name", "digits-dcgan")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "registered rank1-" in proc.stdout and "digits-dcgan version 1" in proc.stdout
    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    (version,) = client.search_model_versions("name='digits-dcgan'")
    assert version.tags["sweep"] == "tracked" and version.tags["model"] == "dcgan"
    download = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path / "dl"),
                                                        tracking_uri=mlflow_server))
    assert sorted(p.name for p in download.iterdir()) == ["config.json", "metrics.json", "model.safetensors",
                                                          "samples.png"]
    best = json.loads((tmp_path / "best" / "best.json").read_text())["checkpoints"][0]
    assert json.loads((download / "metrics.json").read_text())["step"] == best["step"]
    out = tmp_path / "grid.png"
    proc = run_cli("orchestrator.infer", str(download), "sample", "--n", "8", "--out", str(out), "--device", "cpu")
    assert proc.returncode == 0 and out.stat().st_size > 100, proc.stderr[-2000:]
    # registering again adds a version
    proc = run_cli("orchestrator.best", str(tracked), "--dst", str(tmp_path / "best"),
                   "--register-mlflow", mlflow_server, "--model-name", "digits-dcgan")
    assert proc.returncode == 0 and "digits-dcgan version 2" in proc.stdout, proc.stderr[-2000:]


def test_an_unreachable_mlflow_server_is_one_line_before_ray(tmp_path):
    start = time.time()
    proc = run_cli("orchestrator.sweep", "vae", "--dataset", "digits", "--storage", str(tmp_path),
                   "--mlflow", f"http://127.0.0.1:{free_port()}")
    assert_one_line_error(proc, "cannot reach the MLflow server at http://127.0.0.1:")
    assert not list(tmp_path.iterdir())  # nothing written
    assert time.time() - start < 60
    assert_one_line_error(run_cli("orchestrator.best", str(tmp_path), "--model-name", "x"),
                          "--register-mlflow URI and --model-name NAME go together")
