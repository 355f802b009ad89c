"""The one training loop every model family shares, and the Tune trial that runs it.

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
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.fs
import ray
import ray.train
import ray.train.torch
import torch

from trainables import storage
from trainables.checkpoints import load_training_state, read_json, save_checkpoint
from trainables.layout import CHECKPOINT_PREFIX, CONFIG, DIVERGED, METRICS, STORAGE_FULL
from trainables.family import get_family
from trainables.features import Evaluator, to_float

EVAL_SEED = 1234  # the same latent draws at every evaluation, so scores over steps are comparable
TUNE_COPIES = 3  # Tune's copies of a trial's checkpoints kept under PBT (see prune_tune_copies)
TUNE_COPY = re.compile(r"^checkpoint_\d{6}$")  # Tune's names for them (checked on Ray 2.60)

STOPPED_WAIT_SECONDS = 300  # how long such a trial waits to be stopped before it fails instead


def _divergence(loss_sums: dict, step: int, world: int) -> str | None:
    """Why training diverged (a loss sum is NaN or infinite on any worker), or None.

    Checked at report steps only, where every worker gets the same answer (one all-reduce), so
    all of them stop together. A worker that raised instead would make Ray Train restart the
    run from its last checkpoint, only to diverge again."""
    bad = sorted(k for k, v in loss_sums.items() if not math.isfinite(v))
    if world > 1:
        flag = torch.tensor([float(bool(bad))])
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and not bad:
            bad = ["a loss on another worker"]
    if not bad:
        return None
    return f"{', '.join(bad)} became NaN or infinite by step {step} (diverged; lower the learning rate)"


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches(n: int, batch: int, rank: int, world: int, seed: int, start_step: int, stream: int = 0):
    """Endless batches of indices from this worker's shard, reshuffled every pass."""
    shard = np.arange(rank, n, world)
    batch = min(batch, len(shard))  # a tiny --subset still yields batches
    rng = np.random.default_rng([seed, rank, start_step, stream])
    while True:
        order = rng.permutation(shard)
        for i in range(0, len(order) - batch + 1, batch):
            yield np.sort(order[i:i + batch])


def next_batch(data, family, batches, batches_a, device: torch.device) -> dict:
    """The next training batch: {"x", "y"} images and labels, plus "a", the source-domain images,
    for paired data (the same indices) or unpaired data (indices from `batches_a`)."""
    index = next(batches)
    batch = {"x": to_float(torch.from_numpy(data.train_x[index])).to(device, non_blocking=True),
             "y": torch.from_numpy(data.train_y[index]).to(device, non_blocking=True)}
    if family.data_kind != "images":
        index_a = index if batches_a is None else next(batches_a)
        batch["a"] = to_float(torch.from_numpy(data.train_a[index_a])).to(device, non_blocking=True)
    return batch


class TrainSession:
    """A worker's side of a TorchTrainer run: rank, device, DDP wrapping, its run's latest
    checkpoint (after a worker failure or `--resume`), and reports with checkpoints."""

    def __init__(self):
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    @staticmethod
    def prepare_model(module: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, move_to_device=False)

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


class InProcessSession:
    """One worker in the Tune trial's own process. Checkpoints go where Ray Train puts them
    (`<checkpoint_root>/<trial_id>/checkpoint_<time>`, on any storage trainables.storage reaches),
    and the same ones are kept: the best `keep` by the objective, and the latest, which a
    restarted trial (Tune's FailureConfig, `--resume`) continues from. A checkpoint counts only
    once its marker is written, after all its files (object stores have no rename), so a trial
    killed while saving leaves no half checkpoint to resume; the next run of the trial clears it."""

    rank, world = 0, 1

    def __init__(self, settings: dict, trial_id: str, objective: str, mode: str):
        self.folder = storage.location(settings["checkpoint_root"]) / trial_id
        self.keep = settings["keep_checkpoints"]
        self.objective, self.mode = objective, mode
        self.with_checkpoints = settings.get("report_checkpoints", False)
        use_gpu = settings["gpus_per_worker"] > 0 and torch.cuda.is_available()
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
        import ray.tune

        checkpoint = None
        if folder is not None:
            now = time.time_ns() // 1000  # microseconds, named as Ray Train names its checkpoints
            name = (time.strftime("checkpoint_%Y-%m-%d_%H-%M-%S.", time.localtime(now // 1_000_000))
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
        import ray.tune

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
            if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(f"run_trial_{trial_id}_"):
                copies = sorted(i.base_name for i in (root / info.base_name).listdir()
                                if TUNE_COPY.match(i.base_name) and i.type == pyarrow.fs.FileType.Directory)
                for name in copies[:-TUNE_COPIES]:
                    storage.delete_checkpoint(root / info.base_name / name)
    except OSError as e:  # clean-up only: the next checkpoint tries again
        logging.getLogger(__name__).warning("could not prune Tune's checkpoint copies: %s", storage.first_line(e))


@contextlib.contextmanager
def _start_folder(config: dict, session):
    """The checkpoint folder training continues from, or None for a fresh start.

    This training run's own latest checkpoint (after a worker failure, or `--resume`), unless PBT
    restarted the trial from a Tune checkpoint (`start_from`, maybe another trial's): that one
    wins over checkpoints written before it, not over those written since (marked `started_from`).
    """
    start = config.get("start_from")
    with session.own_checkpoint() as folder:
        if folder is not None:
            marker = config["checkpoint_config"].get("started_from")
            if start is None or read_json(folder / CONFIG).get("started_from") == marker:
                yield folder
                return
    if start is None:
        yield None
        return
    with start.as_directory() as folder:
        yield Path(folder)


def _quiet_train_logs() -> None:
    """Not a log line per report in the user's console: Ray Train logs each report at INFO, from
    a logger named after its source file (so "ray.train" does not cover it)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_worker(config: dict) -> None:
    """Ray Train worker function (a TorchTrainer's `train_loop_per_worker`)."""
    _quiet_train_logs()
    train_loop(config, TrainSession())


def train_loop(config: dict, session) -> None:
    """Trains one model family and reports metrics + checkpoints through `session`
    (TrainSession or InProcessSession)."""
    family = get_family(config["model"])
    hp = config["hp"]
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    rank, world, device = session.rank, session.world, session.device
    torch.manual_seed(config["seed"] + rank)
    # which Ray node each worker ran on, kept in every checkpoint's config.json (for multi-node runs)
    nodes = [ray.get_runtime_context().get_node_id()]
    if world > 1:
        nodes = [None] * world
        torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    config["checkpoint_config"] = {**config["checkpoint_config"], "worker_nodes": nodes}

    # read-only arrays from the object store, decoded once per sweep
    data = family.prepare_data(ray.get(config["data_ref"]), hp)
    modules = {k: m.to(device) for k, m in family.build(hp, data.info()).items()}
    # DDP wraps what trains; frozen modules (an EMA copy) stay as they are
    wrapped = {k: session.prepare_model(m) if any(p.requires_grad for p in m.parameters()) else m
               for k, m in modules.items()}
    optimizers = family.optimizers(modules, hp)

    step, best = 0, (math.inf if family.mode == "min" else -math.inf)
    with _start_folder(config, session) as folder:
        if folder:
            # the optimizers' settings (learning rates: PBT mutates them) come from this trial's
            # hyperparameters, their state (moments, step counts) from the checkpoint
            settings = [[{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]
                        for o in optimizers.values()]
            step = load_training_state(folder, modules, optimizers)
            for optimizer, groups in zip(optimizers.values(), settings):
                for group, setting in zip(optimizer.param_groups, groups):
                    group.update(setting)
            best = float(read_json(folder / METRICS).get(f"{family.objective}_best", best))

    evaluator = None
    if rank == 0:
        evaluator = Evaluator(data, config["eval_samples"], *ray.get(config["feature_ref"]), device)

    per_worker = max(1, hp["batch_size"] // world)
    batches = _batches(len(data.train_x), per_worker, rank, world, config["seed"], step)
    # unpaired two-domain data: domain A's images come in their own, independent order
    batches_a = (_batches(len(data.train_a), per_worker, rank, world, config["seed"], step, stream=1)
                 if family.data_kind == "unpaired" else None)
    max_steps, log_every, eval_every = config["max_steps"], config["log_every"], config["eval_every"]
    sums: dict[str, float] = {}
    interval_start, interval_steps = time.perf_counter(), 0

    best_key, better = f"{family.objective}_best", (min if family.mode == "min" else max)

    def report(losses: dict, images_per_s: float, evaluate: bool, checkpoint: bool) -> None:
        nonlocal best
        metrics = {"step": step, "epoch": step * hp["batch_size"] / len(data.train_x),
                   **{k: losses.get(k, math.nan) for k in family.loss_names},
                   "images_per_s": images_per_s, "eval_seconds": math.nan,
                   **{k: math.nan for k in family.metric_names}}
        folder = None
        if rank == 0 and evaluate:
            for m in modules.values():
                m.eval()
            start = time.perf_counter()
            result = family.evaluate(modules, hp, evaluator, EVAL_SEED)
            metrics.update(result.scores, eval_seconds=time.perf_counter() - start)
            for m in modules.values():
                m.train()
            best = metrics[best_key] = better(best, metrics[family.objective])
            if checkpoint:
                folder = Path(tempfile.mkdtemp(prefix="ckpt-"))
                save_checkpoint(folder, modules, optimizers, step, config["checkpoint_config"], metrics,
                                result.images, result.nrow, result.artifacts)
        metrics[best_key] = best
        if world > 1:  # every worker reports the same metrics as rank 0
            box = [metrics]
            torch.distributed.broadcast_object_list(box, src=0)
            metrics = box[0]
        session.report(metrics, folder)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    if step == 0:  # the untrained model's score: the baseline every curve starts from
        report({}, math.nan, evaluate=True, checkpoint=False)
    elif step >= max_steps:  # PBT started this trial from one that had finished: its last report
        report({}, math.nan, evaluate=True, checkpoint=True)

    while step < max_steps:
        batch = next_batch(data, family, batches, batches_a, device)
        with _autocast(device):
            losses = family.train_step(wrapped, optimizers, batch, hp)
        step += 1
        interval_steps += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        evaluate = step % eval_every == 0 or step == max_steps
        if evaluate or step % log_every == 0:
            mean_losses = {k: v / interval_steps for k, v in sums.items()}
            diverged = _divergence(sums, step, world)
            if diverged:  # the trial's last report says why, and the trial ends
                session.report({"step": step, **mean_losses, best_key: best, DIVERGED: diverged})
                return
            images_per_s = interval_steps * per_worker * world / (time.perf_counter() - interval_start)
            report(mean_losses, images_per_s, evaluate, checkpoint=evaluate)
            sums, interval_start, interval_steps = {}, time.perf_counter(), 0


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
        import ray.tune

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


def _start_from(checkpoint, loop: dict) -> None:
    """PBT restarts a trial from a Tune checkpoint, its own or a better trial's: the workers start
    there (`start_from`), and this run's checkpoints say where it started (`started_from`)."""
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{CONFIG}") as f:
        parent = json.loads(f.read())
    loop["start_from"] = checkpoint
    loop["checkpoint_config"]["started_from"] = {"trial_id": parent.get("trial_id"), "step": parent.get("step"),
                                                 "checkpoint": checkpoint.path}


def in_process(settings: dict) -> bool:
    """Whether run_trial trains in its own process (one worker) rather than under a TorchTrainer."""
    return settings["workers_per_trial"] == 1 and not settings.get("torch_trainer", False)


def run_trial(hp: dict, settings: dict) -> None:
    """Tune function trainable: trains one trial's hyperparameters, in this process (one worker,
    see InProcessSession) or by fitting a TorchTrainer.

    Checkpoints are kept per trial id, so a restored trial (driver restart, `--resume`, a trial
    Tune restarted after its node or process died) continues from its latest one. Under PBT
    (`settings["report_checkpoints"]`) Tune also gets the checkpoints, and a trial restarted from
    one (PBT's exploit: another trial's weights and optimizer state, with mutated learning
    rates) starts there.
    """
    import ray.tune
    from ray.train.torch import TorchTrainer

    family = get_family(settings["model"])
    trial_id = ray.tune.get_context().get_trial_id()
    hp = {**family.defaults, **hp}
    loop = dict(settings["loop"], hp=hp)
    loop["checkpoint_config"] = dict(loop["checkpoint_config"], hp=hp, trial_id=trial_id)
    start = ray.tune.get_checkpoint()  # None unless Tune has checkpoints: PBT
    if start is not None:
        _start_from(start, loop)
    if in_process(settings):
        train_loop(loop, InProcessSession(settings, trial_id, family.objective, family.mode))
        return
    report = ReportToTune(with_checkpoints=settings.get("report_checkpoints", False),
                          trial_checkpoints=storage.location(settings["checkpoint_root"]) / trial_id)
    # Ray Train's controller takes the workers' reports when it polls them, every 2 s by default:
    # a trial reporting every couple of seconds spent most of its time waiting (bench/throughput.py:
    # a 300-step VAE trial took 36 s, 15 s at 0.2 s). The trainer passes the setting on to its
    # controller and workers.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    gpus = settings["gpus_per_worker"]
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop,
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings["workers_per_trial"], use_gpu=gpus > 0,
            resources_per_worker={"CPU": settings["cpus_per_worker"], **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(
            name=trial_id,
            storage_path=settings["checkpoint_root"],
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=settings["keep_checkpoints"],
                checkpoint_score_attribute=family.objective,
                checkpoint_score_order=family.mode),
            failure_config=ray.train.FailureConfig(max_failures=settings["max_failures"]),
            callbacks=[report],
        ),
    )
    report.fit(trainer)


run_trial.__mixins__ = (AbortTrainingOnStop,)
