"""A Tune trial that runs the training loop (trainables.loop), and the rest of the Ray glue.

Ray 2.60 runs Ray Train V2, where a TorchTrainer can't be handed to tune.Tuner. So each Tune
trial is a small function trainable (`run_trial`). A trial of several workers fits one
TorchTrainer, whose workers run the loop (`train_worker`: DDP through
ray.train.torch.prepare_model, CPU or CUDA), and every `ray.train.report` is forwarded to Tune,
so schedulers such as ASHA see intermediate results; Ray Train writes the checkpoints to
`<experiment>/checkpoints/<trial_id>/` and keeps the best few by the objective. A one-worker
trial (the default) runs the same loop in the Tune trial's own process (`InProcessSession`),
which keeps its checkpoints in the same place the same way: starting a TorchTrainer's
controller, worker group and process group cost ~9 s a trial (docs/benchmarks.md).
`--torch-trainer` puts one-worker trials under a TorchTrainer too.

Ray's TuneReportCallback would forward the reports, but hands Tune only a checkpoint's path (as
the metric `checkpoint_path`), never a checkpoint, and Population Based Training moves a trial
onto another's state through *Tune's* checkpoints. So run_trial forwards the reports itself
(ReportToTune), under PBT with their checkpoints, which Tune copies into the trial's folder; a
trial that PBT restarts from another's checkpoint finds it in `ray.tune.get_checkpoint()`.

Every use of Ray's private API or undocumented behaviour is in this file, each checked on Ray 2.60:
- quiet_train_logs: Ray Train V2's per-report log lines come from a logger named after a private
  module's file (ray.train.v2._internal.execution.context);
- ReportToTune.abort: the TorchTrainer's controller actor's `abort` method;
- run_trial.__mixins__: how a function trainable gets a cleanup hook (AbortTrainingOnStop);
- RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: the controller's polling interval, an environment variable;
- prune_tune_copies: Tune's names for its checkpoint copies (TUNE_COPY).
The driver's own Tune plug-ins (searcher, callbacks) are in orchestrator/tune_plugins.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.fs
import ray
import ray.train
import ray.train.torch
import ray.tune
import torch

from trainables import storage
from trainables.checkpoints import read_json
from trainables.layout import CHECKPOINT_PREFIX, CONFIG, METRICS, STORAGE_FULL, TRIAL_DIR_PREFIX
from trainables.loop import train_loop
from trainables.models import family_for
from trainables.settings import FinalStart, TrialRun, TrialSettings

TUNE_COPIES = 3  # Tune's copies of a trial's checkpoints kept under PBT (see prune_tune_copies)
TUNE_COPY = re.compile(r"^checkpoint_\d{6}$")  # Tune's names for them
STOPPED_WAIT_SECONDS = 300  # how long a trial whose storage is full waits to be stopped before it fails


class StartsFromCheckpoint:
    """Where a session's training run continues from: its own latest checkpoint (after a worker
    failure, or `--resume`), unless PBT restarted the trial from a Tune checkpoint (`start_from`,
    maybe another trial's), which wins over checkpoints written before it, not over those written
    since (marked `started_from`)."""

    run: TrialRun

    def own_checkpoint(self):
        raise NotImplementedError

    @contextlib.contextmanager
    def start_checkpoint(self):
        start = self.run.start_from
        with self.own_checkpoint() as folder:
            if folder is not None:
                if start is None or read_json(folder / CONFIG).get("started_from") == self.run.checkpoint.started_from:
                    yield folder
                    return
        if start is None:
            yield None
            return
        with start.as_directory() as folder:
            yield Path(folder)


class TrainSession(StartsFromCheckpoint):
    """A worker's side of a TorchTrainer run: rank, device, DDP wrapping, its run's latest
    checkpoint (after a worker failure or `--resume`), and reports with checkpoints."""

    def __init__(self, run: TrialRun):
        ctx = ray.train.get_context()
        self.run = run
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    @staticmethod
    def prepare_model(module: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, move_to_device=False)

    def worker_nodes(self) -> list:
        nodes = [None] * self.world
        torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
        return nodes

    @staticmethod
    @contextlib.contextmanager
    def own_checkpoint():
        own = ray.train.get_checkpoint()
        if own is None:
            yield None
            return
        with own.as_directory() as folder:
            yield Path(folder)

    @staticmethod
    def report(metrics: dict, folder: Path | None = None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


class InProcessSession(StartsFromCheckpoint):
    """One worker in the Tune trial's own process. Checkpoints go where Ray Train puts them
    (`<checkpoint_root>/<trial_id>/checkpoint_<time>`, on any storage trainables.storage reaches),
    and the same ones are kept: the best `keep` by the objective, and the latest, which a
    restarted trial (Tune's FailureConfig, `--resume`) continues from. A checkpoint counts only
    once its marker is written, after all its files (object stores have no rename), so a trial
    killed while saving leaves no half checkpoint to resume; the next run of the trial clears it."""

    rank, world = 0, 1

    def __init__(self, run: TrialRun, objective: str, mode: str):
        settings = run.settings
        self.run = run
        self.folder = storage.location(settings.checkpoint_root) / run.checkpoint.trial_id
        self.keep = settings.keep_checkpoints
        self.objective, self.mode = objective, mode
        self.with_checkpoints = settings.report_checkpoints
        use_gpu = settings.resources.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        # what an earlier run of this trial was saving when it died (".staging-": older versions)
        for info in self.folder.listdir():
            if info.type != pyarrow.fs.FileType.Directory:
                continue
            folder = self.folder / info.base_name
            if info.base_name.startswith(".staging-") or (
                    info.base_name.startswith(CHECKPOINT_PREFIX) and not storage.is_complete(folder)):
                folder.delete_dir()

    @staticmethod
    def prepare_model(module: torch.nn.Module) -> torch.nn.Module:
        return module

    @staticmethod
    def worker_nodes() -> list:
        return [ray.get_runtime_context().get_node_id()]

    def _checkpoints(self) -> list[tuple[storage.Location, float]]:
        """(folder, objective) of this trial's complete checkpoints, oldest first (their names hold
        the time they were written, as Ray Train's do)."""
        found = []
        for info in self.folder.listdir():
            if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith(CHECKPOINT_PREFIX):
                continue
            folder = self.folder / info.base_name
            try:
                if not storage.is_complete(folder):
                    continue
                score = json.loads((folder / METRICS).read_bytes()).get(self.objective)
                found.append((folder, float(math.nan if score is None else score)))
            except (OSError, ValueError, TypeError, AttributeError):
                continue  # not one of ours, or damaged: never resumed from
        return sorted(found, key=lambda c: c[0].name)

    @contextlib.contextmanager
    def own_checkpoint(self):
        checkpoints = self._checkpoints()
        if not checkpoints:
            yield None
            return
        folder = checkpoints[-1][0]
        if not folder.remote:
            yield folder.local
            return
        with tempfile.TemporaryDirectory(prefix="resume-") as local:
            pyarrow.fs.copy_files(folder.path, local, source_filesystem=folder.fs,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())
            yield Path(local)

    def report(self, metrics: dict, folder: Path | None = None) -> None:
        checkpoint = None
        if folder is not None:
            now = time.time_ns() // 1000  # microseconds, named as Ray Train names its checkpoints
            name = (time.strftime(f"{CHECKPOINT_PREFIX}%Y-%m-%d_%H-%M-%S.", time.localtime(now // 1_000_000))
                    + f"{now % 1_000_000:06d}")
            final = self.folder / name
            try:
                final.upload(folder)
                storage.mark_complete(final)
            except OSError as e:
                if not storage.is_full(e):
                    raise
                self._stop_for_space(final, folder, metrics, e)
            self._prune()
            metrics = {**metrics, "checkpoint_path": final.uri}  # as TuneReportCallback does
            if self.with_checkpoints:  # PBT restarts trials from Tune's checkpoints
                checkpoint = ray.tune.Checkpoint(final.path, final.fs)
        ray.tune.report(metrics, checkpoint=checkpoint)
        if checkpoint is not None:
            prune_tune_copies(self.folder)

    def _stop_for_space(self, final: storage.Location, folder: Path, metrics: dict, error: OSError) -> None:
        """The checkpoint did not fit: remove what was written of it (the trial's earlier ones stay
        whole), say so to the sweep (STORAGE_FULL) and wait for it to stop this trial."""
        with contextlib.suppress(OSError):
            storage.delete_checkpoint(final)
        needed = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        experiment = self.folder.parent.parent  # <storage>/<experiment>/checkpoints/<trial_id>
        ray.tune.report({**metrics, STORAGE_FULL: storage.full_message(experiment.parent, needed)})
        time.sleep(STOPPED_WAIT_SECONDS)
        raise error

    def _prune(self) -> None:
        """Keep the best `keep` checkpoints by the objective (unscored ones rank last) and the
        latest, as Ray Train's checkpoint manager does."""
        checkpoints = self._checkpoints()
        if self.keep is None or len(checkpoints) <= self.keep:
            return
        sign = 1 if self.mode == "min" else -1
        ranked = sorted(checkpoints, key=lambda c: sign * c[1] if math.isfinite(c[1]) else math.inf)
        kept = {folder.path for folder, _ in ranked[:self.keep]} | {checkpoints[-1][0].path}
        for folder, _ in checkpoints:
            if folder.path not in kept:
                storage.delete_checkpoint(folder)


def prune_tune_copies(trial_checkpoints: storage.Location) -> None:
    """Under PBT, Tune copies each checkpoint reported to it into the trial's own folder
    (run_trial_<id>_*/checkpoint_000NNN, synchronously in ray.tune.report) for trials to restart
    from. Only a trial's latest are ever used (PBT clones the one a top trial had at its last
    perturbation, every --eval-every steps), so the newest TUNE_COPIES are kept: Tune's own
    num_to_keep fails on Ray 2.60 (PBT's extra saves of a function trainable register twice).
    `trial_checkpoints` is <experiment>/checkpoints/<trial_id>."""
    root, trial_id = trial_checkpoints.parent.parent, trial_checkpoints.name
    try:
        for info in root.listdir():
            if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(f"{TRIAL_DIR_PREFIX}{trial_id}_"):
                copies = sorted(i.base_name for i in (root / info.base_name).listdir()
                                if TUNE_COPY.match(i.base_name) and i.type == pyarrow.fs.FileType.Directory)
                for name in copies[:-TUNE_COPIES]:
                    storage.delete_checkpoint(root / info.base_name / name)
    except OSError as e:  # clean-up only: the next checkpoint tries again
        logging.getLogger(__name__).warning("could not prune Tune's checkpoint copies: %s", storage.first_line(e))


def quiet_train_logs() -> None:
    """Not a log line per report in the user's console: Ray Train logs each report at INFO, from
    a logger named after its source file (so "ray.train" does not cover it)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_data(run: TrialRun) -> tuple:
    """The dataset and the feature network, from the object store (decoded once per sweep)."""
    return ray.get(run.settings.data_ref), ray.get(run.settings.feature_ref)


def train_worker(config: dict) -> None:
    """Ray Train worker function (a TorchTrainer's `train_loop_per_worker`); config: {"run": TrialRun}."""
    quiet_train_logs()
    run = config["run"]
    train_loop(run, TrainSession(run), *train_loop_data(run))


class ReportToTune(ray.train.UserCallback):
    """What TuneReportCallback does (every `ray.train.report` reaches Tune), plus two things it
    can't: hand Tune the checkpoint too, when asked (PBT restarts trials from Tune's checkpoints;
    TuneReportCallback passes only a checkpoint's path, as a metric), and abort the training run
    when Tune stops the trial (see AbortTrainingOnStop). Reports go through a queue from the
    trainer's controller to the trial's thread, which reports them to Tune."""

    def __init__(self, with_checkpoints: bool, trial_checkpoints: storage.Location):
        from ray.util.queue import Queue

        self.with_checkpoints, self.trial_checkpoints = with_checkpoints, trial_checkpoints
        self.queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
        self.controller = None  # the TorchTrainer's controller actor, once it has reported
        self.stopping = False

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        # runs in the controller
        self.queue.put((metrics[0], checkpoint, ray.get_runtime_context().current_actor))

    def fit(self, trainer) -> None:
        """Fit `trainer` in a thread; report to Tune from this one (the trial's) as it goes."""
        global _running
        _running, errors = self, []

        def fit_and_close() -> None:
            try:
                trainer.fit()
            except BaseException as e:  # noqa: BLE001  (raised again in the trial's thread)
                errors.append(e)
            finally:
                self.queue.put(None)

        threading.Thread(target=fit_and_close, daemon=True).start()
        while (item := self.queue.get()) is not None:
            metrics, checkpoint, self.controller = item
            if checkpoint is not None:
                # Ray Train has written every file of it: the marker makes it count (trainables.storage),
                # unless Ray Train's own pruning removed it already (a marker alone is no checkpoint)
                folder = storage.Location(checkpoint.filesystem, checkpoint.path, checkpoint.path)
                if (folder / METRICS).is_file():
                    storage.mark_complete(folder)
                metrics = {**metrics, "checkpoint_path": checkpoint.path}  # as TuneReportCallback does
                checkpoint = ray.tune.Checkpoint(checkpoint.path, checkpoint.filesystem)
            ray.tune.report(metrics, checkpoint=checkpoint if self.with_checkpoints else None)
            if checkpoint is not None and self.with_checkpoints:
                prune_tune_copies(self.trial_checkpoints)
        self.controller = item = None  # let the finished run's controller go
        if errors and not self.stopping:
            raise errors[0]

    def abort(self) -> None:
        self.stopping = True
        if self.controller is not None:
            with contextlib.suppress(ray.exceptions.RayError):  # a finished run's controller is gone
                ray.get(self.controller.abort.remote(), timeout=120)


_running: ReportToTune | None = None  # the training run of this process's trial (one per Tune actor)


class AbortTrainingOnStop:
    """Mixin of run_trial's Tune trainable (Tune's `__mixins__`): when Tune stops or pauses the
    trial before its training ends (ASHA's early stop, PBT's exploit), abort the TorchTrainer
    first, as its own Ctrl-C handler would. Otherwise the trial's actor dies with the trainer's
    controller in it and the workers' placement group stays reserved, holding their CPUs: Ray
    Train's cleaner looks for dead controllers through the State API, which needs the dashboard
    and fails when several Rays run on one machine (seen with the test cluster: PBT hung)."""

    def cleanup(self):
        if _running is not None:
            _running.abort()
        super().cleanup()


def started_from(checkpoint, run: TrialRun) -> TrialRun:
    """PBT restarts a trial from a Tune checkpoint, its own or a better trial's: the workers start
    there (`start_from`), and this run's checkpoints say where it started (`started_from`)."""
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{CONFIG}") as f:
        parent = json.loads(f.read())
    marker = {"trial_id": parent.get("trial_id"), "step": parent.get("step"), "checkpoint": checkpoint.path}
    return replace(run, start_from=checkpoint, checkpoint=run.checkpoint.but(started_from=marker))


def run_trial(hp: dict, settings: TrialSettings) -> None:
    """Tune function trainable: trains one trial's hyperparameters, in this process (one worker,
    see InProcessSession) or by fitting a TorchTrainer.

    Checkpoints are kept per trial id, so a restored trial (driver restart, `--resume`, a trial
    Tune restarted after its node or process died) continues from its latest one. A trial of the
    final phase (its config has a FinalStart) starts from a search trial's best checkpoint and
    trains to its step. Under PBT
    (`settings.report_checkpoints`) Tune also gets the checkpoints, and a trial restarted from
    one (PBT's exploit: another trial's weights and optimizer state, with mutated learning
    rates) starts there.
    """
    from ray.train.torch import TorchTrainer

    family = family_for(settings.loop.model, settings.loop.family_source, settings.loop.family_class)
    trial_id = ray.tune.get_context().get_trial_id()
    hp, final = FinalStart.split(hp)
    hp = {**family.defaults, **hp}
    start = ray.tune.get_checkpoint()  # None unless Tune has checkpoints: PBT
    if final:  # the final phase: a top trial's best checkpoint, trained on to `final.until`
        parent = storage.location(final.checkpoint)
        start = ray.train.Checkpoint(parent.path, parent.fs)
        settings = replace(settings, loop=replace(settings.loop, max_steps=final.until))
    run = TrialRun(settings, hp, settings.checkpoint.but(hp=hp, trial_id=trial_id))
    if start is not None:
        run = started_from(start, run)
    resources = settings.resources
    if resources.in_process:
        train_loop(run, InProcessSession(run, family.objective, family.mode), *train_loop_data(run))
        return
    report = ReportToTune(with_checkpoints=settings.report_checkpoints,
                          trial_checkpoints=storage.location(settings.checkpoint_root) / trial_id)
    # Ray Train's controller takes the workers' reports when it polls them, every 2 s by default:
    # a trial reporting every couple of seconds spent most of its time waiting (bench/throughput.py:
    # a 300-step VAE trial took 36 s, 15 s at 0.2 s). The trainer passes the setting on to its
    # controller and workers.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    gpus = resources.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"run": run},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers_per_trial, use_gpu=gpus > 0,
            resources_per_worker={"CPU": resources.cpus_per_worker, **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(
            name=trial_id,
            storage_path=settings.checkpoint_root,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=settings.keep_checkpoints,
                checkpoint_score_attribute=family.objective,
                checkpoint_score_order=family.mode),
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            callbacks=[report],
        ),
    )
    report.fit(trainer)


run_trial.__mixins__ = (AbortTrainingOnStop,)
