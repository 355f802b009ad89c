"""MLflow: a sweep's trials as MLflow runs (`sweep --mlflow URI`), and the best checkpoint as a
registered model version (`best --register-mlflow URI --model-name NAME`). MLflow is optional:
`pip install 'gen-orchestrator[mlflow]'`."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback

from trainables.cli import UsageError
from trainables.layout import CONFIG, METRICS, SAMPLES, WEIGHTS
from trainables.settings import FinalStart
from trainables.storage import first_line, reach_seconds

REGISTERED_FILES = (WEIGHTS, CONFIG, METRICS, SAMPLES)  # what infer needs (weights, config), and what shows it


DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "databricks")  # MLflow's SQLAlchemy stores, and Databricks


def check_mlflow(uri: str) -> None:
    """Refuse, before Ray starts (or `best` exports anything), an MLflow that isn't installed, a URI
    MLflow won't take, or a tracking server that doesn't answer (MLflow's own client retries for
    minutes). A database URI (sqlite:///FILE, postgresql://...) needs no server. A plain folder is
    MLflow's file store, which MLflow 3 refuses ('maintenance mode'): said here in one line."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UsageError("--mlflow needs MLflow: pip install 'gen-orchestrator[mlflow]'") from None
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme not in ("http", "https"):
        if scheme.split("+")[0] in DATABASE_SCHEMES:
            return
        raise UsageError(f"MLflow URI {uri!r}: give a tracking server (http://HOST:PORT) or a database "
                         f"(sqlite:///FILE); MLflow no longer takes a folder")
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=reach_seconds()) as answer:
            answer.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise UsageError(f"cannot reach the MLflow server at {uri} ({first_line(getattr(e, 'reason', e))})") from None


class LogToMLflow(MLflowLoggerCallback):
    """Ray Tune's MLflow callback, in an MLflow experiment named after the sweep, with three changes:
    MLflow's step is the trial's own `step` (Tune's counts reports), each run is tagged with the
    trial id and, at its end, its status, and the kept checkpoints' sample grids (local storage)
    become the run's artifacts."""

    def __init__(self, uri: str, sweep: str, checkpoints: Path | None, max_steps: int):
        super().__init__(uri, registry_uri=uri, experiment_name=sweep, tags={"sweep": sweep})
        self.checkpoints, self.max_steps = checkpoints, max_steps

    def log_trial_start(self, trial) -> None:
        self.tags = {**self.tags, "trial_id": trial.trial_id}
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        numbers = {k: v for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=numbers,
                                     step=int(numbers.get("step", iteration)))

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run_id = self._trial_runs[trial]
        client = self.mlflow_util._get_client()
        step = (trial.last_result or {}).get("step", 0)
        final = FinalStart.split(trial.config)[1]
        until = final.until if final else self.max_steps  # a final trial trains to its own step
        status = "errored" if failed else ("finished" if step >= until else "stopped early")
        client.set_tag(run_id, "status", status)
        if self.checkpoints is not None:
            for grid in sorted((self.checkpoints / trial.trial_id).glob(f"*/{SAMPLES}")):
                client.log_artifact(run_id, str(grid), artifact_path=f"samples/{grid.parent.name}")
        super().log_trial_end(trial, failed)


def register_best(uri: str, model_name: str, checkpoint: Path, tags: dict[str, str]) -> str:
    """A registered model version of an exported checkpoint: its weights, config.json, metrics.json
    and sample grid logged as the artifacts of a run of the sweep's MLflow experiment. Returns the
    version's number."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        experiment = client.get_experiment_by_name(tags["sweep"])
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(tags["sweep"])
        run = client.create_run(experiment_id, tags={**tags, "kind": "registered checkpoint"},
                                run_name=f"best-{checkpoint.name}")
        for name in REGISTERED_FILES:
            if (checkpoint / name).is_file():
                client.log_artifact(run.info.run_id, str(checkpoint / name), artifact_path="checkpoint")
        client.set_terminated(run.info.run_id)
        try:
            client.create_registered_model(model_name)
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
        version = client.create_model_version(model_name, f"{run.info.artifact_uri}/checkpoint",
                                              run_id=run.info.run_id, tags=tags)
    except MlflowException as e:
        raise UsageError(f"MLflow at {uri} refused the model {model_name!r}: {first_line(e)}") from None
    return str(version.version)
