"""The one training loop every model family shares, and the Tune trial that runs it.

Ray 2.60 runs Ray Train V2, where a TorchTrainer can't be handed to tune.Tuner. So each Tune
trial is a small function trainable (`run_trial`) that fits one TorchTrainer; the trainer's
workers run `train_worker` (DDP through ray.train.torch.prepare_model, CPU or CUDA), and
TuneReportCallback forwards every `ray.train.report` to Tune, so schedulers such as ASHA see
intermediate results. Checkpoints are written to `<experiment>/checkpoints/<trial_id>/` by Ray
Train, which keeps the best few by the objective.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from trainables.checkpoints import METRICS, load_training_state, read_json, save_checkpoint
from trainables.family import get_family
from trainables.features import Evaluator, to_float

EVAL_SEED = 1234  # the same latent draws at every evaluation, so scores over steps are comparable


class Diverged(RuntimeError):
    """A loss became NaN or infinite."""


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


def train_worker(config: dict) -> None:
    """Ray Train worker function: trains one model family and reports metrics + checkpoints."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not a log line per report
    family = get_family(config["model"])
    hp = config["hp"]
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config["seed"] + rank)

    # read-only arrays from the object store, decoded once per sweep
    data = family.prepare_data(ray.get(config["data_ref"]), hp)
    modules = {k: m.to(device) for k, m in family.build(hp, data.info()).items()}
    # DDP wraps what trains; frozen modules (an EMA copy) stay as they are
    wrapped = {k: ray.train.torch.prepare_model(m, move_to_device=False)
               if any(p.requires_grad for p in m.parameters()) else m for k, m in modules.items()}
    optimizers = family.optimizers(modules, hp)

    step, best = 0, (math.inf if family.mode == "min" else -math.inf)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            step = load_training_state(Path(folder), modules, optimizers)
            best = float(read_json(Path(folder) / METRICS).get(f"{family.objective}_best", best))

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
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    if step == 0:  # the untrained model's score: the baseline every curve starts from
        report({}, math.nan, evaluate=True, checkpoint=False)

    while step < max_steps:
        index = next(batches)
        batch = {"x": to_float(torch.from_numpy(data.train_x[index])).to(device, non_blocking=True),
                 "y": torch.from_numpy(data.train_y[index]).to(device, non_blocking=True)}
        if family.data_kind != "images":
            index_a = index if batches_a is None else next(batches_a)
            batch["a"] = to_float(torch.from_numpy(data.train_a[index_a])).to(device, non_blocking=True)
        with _autocast(device):
            losses = family.train_step(wrapped, optimizers, batch, hp)
        step += 1
        interval_steps += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        bad = [k for k, v in sums.items() if not math.isfinite(v)]
        if bad:
            raise Diverged(f"{', '.join(bad)} became non-finite at step {step} (diverged; lower the learning rate)")
        evaluate = step % eval_every == 0 or step == max_steps
        if evaluate or step % log_every == 0:
            images_per_s = interval_steps * per_worker * world / (time.perf_counter() - interval_start)
            report({k: v / interval_steps for k, v in sums.items()}, images_per_s, evaluate, checkpoint=evaluate)
            sums, interval_start, interval_steps = {}, time.perf_counter(), 0


def run_trial(hp: dict, settings: dict) -> None:
    """Tune function trainable: fits one TorchTrainer for this trial's hyperparameters.

    The trainer's run is named after the trial, so a restored trial (driver restart, `--resume`)
    finds its own checkpoints and continues from the latest one.
    """
    from ray.tune import get_context
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.train.torch import TorchTrainer

    family = get_family(settings["model"])
    trial_id = get_context().get_trial_id()
    hp = {**family.defaults, **hp}
    loop = dict(settings["loop"], hp=hp)
    loop["checkpoint_config"] = dict(loop["checkpoint_config"], hp=hp, trial_id=trial_id)
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
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()
