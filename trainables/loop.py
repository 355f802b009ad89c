"""The one training loop every model family shares: batches, a step, a divergence check, and at
every evaluation a report with a checkpoint. It knows nothing of Ray: a session
(trainables.ray_trial) gives it a rank, a device and a place to report to, and the checkpoint it
starts from.

A session has: `rank`, `world`, `device`, `prepare_model(module)` (DDP for several workers),
`start_checkpoint()` (a context manager giving the folder to continue from, or None),
`worker_nodes()` and `report(metrics, folder=None)`.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainables.augment import augment_batch, augment_policies, background
from trainables.blocks import diffaug_policies
from trainables.checkpoints import load_training_state, read_json, save_checkpoint
from trainables.family import inference_cost, loss_scaling
from trainables.feature_networks import to_float
from trainables.features import Evaluator
from trainables.layout import COST_METRICS, DIVERGED, METRICS, UNTRAINED
from trainables.models import family_for
from trainables.settings import TrialRun

EVAL_SEED = 1234  # the same latent draws at every evaluation, so scores over steps are comparable


def divergence(loss_sums: dict, step: int, world: int) -> str | None:
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


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # --precision: autocast's dtype


def autocast(device: torch.device, precision: str):
    """The training step's mixed precision (evaluations run in fp32, so scores compare across runs)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def index_batches(n: int, batch: int, rank: int, world: int, seed: int, start_step: int, stream: int = 0):
    """Endless batches of indices from this worker's shard, reshuffled every pass."""
    shard = np.arange(rank, n, world)
    batch = min(batch, len(shard))  # a tiny --subset still yields batches
    rng = np.random.default_rng([seed, rank, start_step, stream])
    while True:
        order = rng.permutation(shard)
        for i in range(0, len(order) - batch + 1, batch):
            yield np.sort(order[i:i + batch])


def next_batch(data, family, batches, batches_a, device: torch.device, channels_last: bool = False) -> dict:
    """The next training batch: {"x", "y"} images and labels, plus "a", the source-domain images,
    for paired data (the same indices) or unpaired data (indices from `batches_a`)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def images(array):
        return to_float(torch.from_numpy(array)).to(device, non_blocking=True).contiguous(memory_format=layout)

    index = next(batches)
    batch = {"x": images(data.train_x[index]), "y": torch.from_numpy(data.train_y[index]).to(device, non_blocking=True)}
    if family.data_kind != "images":
        batch["a"] = images(data.train_a[index if batches_a is None else next(batches_a)])
    return batch


def resume(folder: Path, modules: dict, optimizers: dict, best: float, best_key: str) -> tuple[int, float]:
    """Continue from a checkpoint: its weights and optimizer state (moments, step counts); the
    optimizers' settings (learning rates, which PBT mutates) stay this trial's. Returns the step
    and the best objective so far."""
    settings = [[{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] for o in optimizers.values()]
    step = load_training_state(folder, modules, optimizers)
    for optimizer, groups in zip(optimizers.values(), settings):
        for group, setting in zip(optimizer.param_groups, groups):
            group.update(setting)
    return step, float(read_json(folder / METRICS).get(best_key, best))


def lr_cooldown(optimizers: dict, start: int | None, end: int):
    """The final phase's cooldown: a function that sets every learning rate to its value times
    (end - step) / (end - start), from 1 at `start` down to 0 at `end` (Hägele et al. 2024, the
    decay of a warmup-stable-decay schedule). A function of the step alone, so a trial resumed
    mid-way needs no scheduler state; None when there is no cooldown."""
    if start is None or end <= start:
        return None
    rates = [[group["lr"] for group in optimizer.param_groups] for optimizer in optimizers.values()]

    def set_rates(step: int) -> None:
        factor = max(0.0, (end - step) / (end - start))
        for optimizer, lrs in zip(optimizers.values(), rates):
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = lr * factor
    return set_rates


def rng_kept(device: torch.device):
    """A block whose random draws (KID's subsets, a feature network built before its weights are
    loaded, the cost metrics' inputs) leave the trial's own random stream as it was: its training
    then doesn't depend on how often it is evaluated, or on whether its process built an Evaluator."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class Reporter:
    """Reports a step's metrics to the session; at evaluation steps (rank 0) evaluates the model
    and, when asked, writes a checkpoint with the report. Keeps the best objective so far, and the
    model's inference cost (COST_METRICS), measured at the first evaluation and reported from then on."""

    def __init__(self, run: TrialRun, session, family, modules: dict, optimizers: dict, evaluator, train_size: int,
                 best: float):
        self.run, self.session, self.family = run, session, family
        self.modules, self.optimizers, self.evaluator = modules, optimizers, evaluator
        self.train_size, self.best = train_size, best
        self.best_key = f"{family.objective}_best"
        self.better = min if family.mode == "min" else max
        self.cost = dict.fromkeys(COST_METRICS, math.nan)
        self.cost_measured = False

    def report(self, step: int, losses: dict, images_per_s: float, evaluate: bool, checkpoint: bool,
               untrained: bool = False) -> None:
        """`untrained`: the reading of the model before its first step, reported as a reference
        (UNTRAINED) that never becomes the trial's best."""
        family, hp = self.family, self.run.hp
        metrics = {"step": step, "epoch": step * hp["batch_size"] / self.train_size,
                   **{k: losses.get(k, math.nan) for k in family.loss_names},
                   "images_per_s": images_per_s, "eval_seconds": math.nan,
                   **{k: math.nan for k in family.metric_names}, **self.cost}
        evaluated = self.evaluate(metrics) if self.session.rank == 0 and evaluate else None
        if untrained:
            metrics[UNTRAINED] = 1
        elif evaluated:
            self.best = self.better(self.best, metrics[family.objective])
        metrics[self.best_key] = self.best
        folder = None
        if evaluated and checkpoint:
            folder = Path(tempfile.mkdtemp(prefix="ckpt-"))
            save_checkpoint(folder, self.modules, self.optimizers, step, self.run.checkpoint, metrics,
                            evaluated.images, evaluated.nrow, evaluated.artifacts)
        if self.session.world > 1:  # every worker reports the same metrics as rank 0
            box = [metrics]
            torch.distributed.broadcast_object_list(box, src=0)
            metrics = box[0]
        self.session.report(metrics, folder)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    def evaluate(self, metrics: dict):
        for m in self.modules.values():
            m.eval()
        with rng_kept(self.evaluator.device):
            torch.manual_seed(EVAL_SEED)  # KID's subsets: the same draws at every evaluation
            start = time.perf_counter()
            result = self.family.evaluate(self.modules, self.run.hp, self.evaluator, EVAL_SEED)
            metrics.update(result.scores, eval_seconds=time.perf_counter() - start)
            if not self.cost_measured:  # once per run of the trial, not counted in eval_seconds
                self.cost = inference_cost(self.family, self.modules, self.run.hp, self.evaluator)
                self.cost_measured = True
        metrics.update(self.cost)
        for m in self.modules.values():
            m.train()
        return result

    def diverged(self, step: int, mean_losses: dict, why: str) -> None:
        """The trial's last report: why it diverged (the trial then ends). It carries every metric a
        searcher ranks on (Tune refuses a report without them), the costs of a Pareto search too."""
        self.session.report({"step": step, **mean_losses, self.best_key: self.best, **self.cost, DIVERGED: why})


_EVALUATORS: dict = {}  # the Evaluator this process built last, by what it was built from


def shared_evaluator(run: TrialRun, data, features: tuple[dict, dict], device: torch.device) -> Evaluator:
    """The trial's Evaluator. Tune runs a sweep's next trial in the process of one that ended
    (reuse_actors), on the same held-out images and feature network (the same object refs): that
    trial's Evaluator, with its feature network and real-image features, serves it too (families
    narrow the training images only). Without refs (a trial run outside a sweep): a new one."""
    settings = run.settings

    def new_evaluator() -> Evaluator:
        with rng_kept(device):
            return Evaluator(data, settings.loop.eval_samples, *features, device)

    if settings.data_ref is None or settings.feature_ref is None:
        return new_evaluator()
    key = (settings.data_ref.hex(), settings.feature_ref.hex(), settings.loop.eval_samples, str(device))
    if key not in _EVALUATORS:
        _EVALUATORS.clear()
        _EVALUATORS[key] = new_evaluator()
    return _EVALUATORS[key]


def check_transforms(hp: dict) -> None:
    """An unknown `augment`, or `diffaug` (a DiffAugment policy, in the families that have one),
    refused: by the sweep before Ray starts, and by every trial before it trains."""
    augment_policies(hp.get("augment", "none"))
    if "diffaug" in hp:
        diffaug_policies(hp["diffaug"])


def train_loop(run: TrialRun, session, data, features: tuple[dict, dict]) -> None:
    """Trains one trial's model family on `data` and reports metrics and checkpoints to `session`."""
    loop, hp = run.settings.loop, run.hp
    family = family_for(loop.model, loop.family_source, loop.family_class)
    torch.set_num_threads(max(1, int(run.settings.resources.cpus_per_worker)))
    rank, world, device = session.rank, session.world, session.device
    torch.manual_seed(loop.seed + rank)
    run = TrialRun(run.settings, hp, run.checkpoint.but(worker_nodes=session.worker_nodes()), run.start_from)

    check_transforms(hp)
    data = family.prepare_data(data, hp)
    modules = {k: m.to(device) for k, m in family.build(hp, data.info()).items()}
    if loop.channels_last:  # conv weights as NHWC (other tensors stay as they are)
        modules = {k: m.to(memory_format=torch.channels_last) for k, m in modules.items()}
    # DDP wraps what trains; frozen modules (an EMA copy) stay as they are
    wrapped = {k: session.prepare_model(m) if any(p.requires_grad for p in m.parameters()) else m
               for k, m in modules.items()}
    optimizers = family.optimizers(modules, hp)

    step, best = 0, (math.inf if family.mode == "min" else -math.inf)
    with session.start_checkpoint() as folder:
        if folder:
            step, best = resume(folder, modules, optimizers, best, f"{family.objective}_best")

    evaluator = shared_evaluator(run, data, features, device) if rank == 0 else None
    reporter = Reporter(run, session, family, modules, optimizers, evaluator, len(data.train_x), best)
    per_worker = max(1, hp["batch_size"] // world)
    batches = index_batches(len(data.train_x), per_worker, rank, world, loop.seed, step)
    # unpaired two-domain data: domain A's images come in their own, independent order
    batches_a = (index_batches(len(data.train_a), per_worker, rank, world, loop.seed, step, stream=1)
                 if family.data_kind == "unpaired" else None)

    if step == 0 and family.scores_untrained:  # the untrained model's score: the baseline every curve starts from
        reporter.report(step, {}, math.nan, evaluate=True, checkpoint=False, untrained=True)
    elif step >= loop.max_steps:  # PBT started this trial from one that had finished: its last report
        reporter.report(step, {}, math.nan, evaluate=True, checkpoint=True)

    augment = hp.get("augment", "none")  # training-time augmentation; rotations fill with each domain's background
    fills = {key: background(images) for key, images in (("x", data.train_x), ("a", data.train_a)) if images is not None}
    # fp16 needs its losses scaled (bf16 has fp32's range); the scale starts anew on a resume
    scaler = torch.amp.GradScaler(device.type) if loop.precision == "fp16" else None
    # the final phase's cooldown starts at the step of the parent's checkpoint it continues from
    decay_from = int(run.checkpoint.started_from["step"]) if loop.final_decay else None
    cooldown = lr_cooldown(optimizers, decay_from, loop.max_steps)
    sums: dict[str, float] = {}
    interval_start, interval_steps = time.perf_counter(), 0
    while step < loop.max_steps:
        if cooldown:
            cooldown(step)
        batch = augment_batch(next_batch(data, family, batches, batches_a, device, loop.channels_last),
                              augment, family.data_kind == "paired", fills)
        with autocast(device, loop.precision), loss_scaling(scaler):
            losses = family.train_step(wrapped, optimizers, batch, hp)
        if scaler:
            scaler.update()
        step += 1
        interval_steps += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        evaluate = step % loop.eval_every == 0 or step == loop.max_steps
        if not (evaluate or step % loop.log_every == 0):
            continue
        mean_losses = {k: v / interval_steps for k, v in sums.items()}
        why = divergence(sums, step, world)
        if why:
            reporter.diverged(step, mean_losses, why)
            return
        images_per_s = interval_steps * per_worker * world / (time.perf_counter() - interval_start)
        reporter.report(step, mean_losses, images_per_s, evaluate, checkpoint=evaluate)
        sums, interval_start, interval_steps = {}, time.perf_counter(), 0
