"""python -m orchestrator.rescore EXPERIMENT [--top K] [--seeds S] [--samples N]: re-score the winners.

A sweep ranks its checkpoints on one reading each (1000-2000 samples, one seed). Over many
checkpoints the best reading is partly luck: the winner's curse. This re-evaluates the top K kept
checkpoints with S sample seeds on N held-out images each (default: all of them), in the sweep's
own feature space, as Ray tasks (a cluster scores them in parallel), and writes
EXPERIMENT/rescore.json. `orchestrator.best` and the dashboard then rank by the re-scored mean.
EXPERIMENT may be a URI (s3://...); rescore.json is written there.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import statistics
import time
from dataclasses import dataclass

from trainables.cli import Parser, UsageError, add_family_module, load_family_modules, positive_int, run
from trainables.experiment import load_experiment
from trainables.layout import RESCORE_FILE
from trainables.storage import first_line
from trainables.trials import Experiment

TOP, SEEDS = 5, 3
SEED_BASE = 1000  # re-scoring seeds 1000, 1001, ...: draws the sweep's single reading (trainables.loop.EVAL_SEED) never made
# samples (and held-out images) that the precision/recall and memorization checks take: prdc holds
# N x N distance matrices in float64 (5000: 200 MB each; 10000 would be 800 MB)
CHECKED_SAMPLES = 5000
NEAREST_K = 5  # prdc's k, as Naeem et al. 2020 recommend
MEMORIZED_PERCENTILE = 1.0  # a sample is "memorized" when closer to a training image than 99% of held-out images are


def summary(values: list[float]) -> dict:
    """Mean, sample standard deviation and Student-t 95% interval of the mean over seeds."""
    from scipy import stats

    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "ci95": [math.nan, math.nan]}
    n = len(finite)
    mean = sum(finite) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def nearest_training(features, train):
    """Each feature vector's distance to its nearest training image's, in chunks: prdc's pairwise
    distances would hold samples x training images (5000 x 60000) at once."""
    import torch

    return torch.cat([torch.cdist(chunk, train).min(dim=1).values for chunk in features.split(1000)])


def memorization_threshold(real, train) -> float:
    """The distance to the nearest training image that all but MEMORIZED_PERCENTILE % of held-out
    images exceed: a sample nearer than that sits closer to the training set than real images do."""
    import torch

    return float(torch.quantile(nearest_training(real[:CHECKED_SAMPLES], train), MEMORIZED_PERCENTILE / 100))


def sample_checks(real, fake, train, threshold: float) -> dict[str, float]:
    """Improved precision/recall and density/coverage of `fake` against `real` features (the
    `prdc` reference code), and the share of samples nearer to a training image (`train`
    features) than `threshold` (memorization_threshold), each on up to CHECKED_SAMPLES samples."""
    import numpy as np
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the sample counts
        checks = compute_prdc(real[:CHECKED_SAMPLES].numpy().astype(np.float32),
                              fake[:CHECKED_SAMPLES].numpy().astype(np.float32), nearest_k=NEAREST_K)
    checks["memorized_share"] = float((nearest_training(fake[:CHECKED_SAMPLES], train) < threshold).float().mean())
    return {k: float(v) for k, v in checks.items()}


RESCORE_SHARE = 0.15  # of a sweep's own time: what its closing re-scoring may take, unless --rescore-top says
FIXED_SECONDS = 3.0  # a re-scoring's start: tasks, data and feature network loaded
TRAIN_EMBED_SHARE = 0.25  # embedding a training image (the memorization check) against scoring a sample


@dataclass(frozen=True)
class RescorePlan:
    """How a sweep's winners are re-scored: `top` checkpoints x `seeds` on `samples` held-out images
    each (None: all), and about how long that takes (None: no evaluation timed to go by)."""
    top: int
    seeds: int
    samples: int | None
    seconds: float | None

    def describe(self) -> str:
        cost = f"; about {self.seconds:.0f} s" if self.seconds is not None else ""
        return f"the top {self.top} checkpoints, {self.seeds} seeds x {self.samples or 'all'} held-out images{cost}"


def plan_rescore(exp: Experiment, top: int, cpus: int, sweep_seconds: float | None = None,
                 share: float = RESCORE_SHARE) -> RescorePlan | None:
    """The re-scoring a sweep closes with. Given `sweep_seconds`, scaled to at most `share` of them
    (cost_model's estimate): fewer held-out images (down to the sweep's own count), then fewer
    checkpoints; None where even the winner alone on that count would take longer. Without it
    (--rescore-top given), the full re-scoring."""
    top = min(top, len(exp.ranked_checkpoints(rescored=False)))
    if not top:
        return None
    per_image, full, held_out, scored, train = cost_model(exp)

    def plan(k: int, n: int | None) -> RescorePlan:
        return RescorePlan(k, SEEDS, None if n == held_out else n, estimate(per_image, k, SEEDS, n, cpus, train))

    if sweep_seconds is None or per_image is None:
        return plan(top, full)
    counts = [full]
    while counts[-1] // 2 > scored:
        counts.append(counts[-1] // 2)
    counts.append(scored)
    fitting = (plan(k, n) for k in range(top, 0, -1) for n in counts)
    return next((p for p in fitting if p.seconds <= share * sweep_seconds), None)


def cost_model(exp: Experiment) -> tuple[float | None, int | None, int | None, int | None, int]:
    """What re-scoring costs, from the sweep's own evaluations: seconds per re-scored image (their
    median seconds per image times the family's rescore_cost; None where none was timed), the
    images a full re-scoring takes (the family's rescore_samples, else every held-out one), the
    held-out count, the count each sweep evaluation scored, and the training images."""
    from trainables.models import family_for

    spec = exp.spec
    family = family_for(spec["model"], spec.get("family_source"))
    held_out = ((spec.get("dataset_info") or {}).get("sizes") or {}).get("test")
    full = min(family.rescore_samples or held_out, held_out) if held_out else family.rescore_samples
    timed = [r["eval_seconds"] for t in exp.trials for r in t.results
             if isinstance(r.get("eval_seconds"), (int, float)) and math.isfinite(r["eval_seconds"])]
    scored = min(spec.get("eval_samples") or 0, held_out or 0)
    train = ((spec.get("dataset_info") or {}).get("sizes") or {}).get("train") or 0
    if not timed or not full or not scored:
        return None, full, held_out, scored or None, train
    best = exp.ranked_checkpoints(rescored=False)[0][0]
    per_image = statistics.median(timed) / scored * family.rescore_cost({**family.defaults, **best.params})
    return per_image, full, held_out, min(scored, full), train


def estimate(per_image: float | None, top: int, seeds: int, samples: int | None, cpus: int,
             train: int = 0) -> float | None:
    """Seconds to re-score `top` checkpoints (one task each, `cpus` at once) x `seeds` on `samples`
    images, each task also embedding the `train` training images once (the memorization check)."""
    if per_image is None or not samples:
        return None
    per_task = (seeds * samples + TRAIN_EMBED_SHARE * train) * per_image
    return FIXED_SECONDS + math.ceil(top / max(1, min(top, cpus))) * per_task


def score_checkpoint(checkpoint: str, data, features: tuple[dict, dict], seeds: list[int], samples: int | None,
                     defined=None) -> dict:
    """One checkpoint, every seed: the family's own evaluation on `samples` held-out images, plus
    sample_checks where the evaluation generated images for domain x. Runs as a Ray task;
    `defined`: the family's class where it was defined in a notebook (no file to import it from)."""
    import torch

    from trainables.checkpoints import load_checkpoint
    from trainables.models import family_for

    if defined is not None:
        family_for(defined.name, None, defined)
    from trainables.feature_networks import to_float
    from trainables.features import Evaluator

    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_checkpoint(checkpoint, device)
    family = model.family
    hp = family.rescoring_hp({**family.defaults, **model.hp})
    data = family.prepare_data(data, hp)

    class Recording(Evaluator):
        """The Evaluator that keeps the feature vectors of the images it scored for domain x."""
        fake = None

        def quality(self, fake, domain="x"):
            if domain == "x" and self.classifier is not None:
                self.fake = self.embed(fake)
            return super().quality(fake, domain)

        def embed(self, images):
            """Feature vectors of float images in [-1, 1], or of uint8 arrays (converted chunk by chunk)."""
            with torch.no_grad():
                return torch.cat([self.classifier.features(as_float(images[i:i + 500]).to(self.device)).cpu()
                                  for i in range(0, len(images), 500)])

    def as_float(chunk):
        return chunk.float().clamp(-1, 1) if isinstance(chunk, torch.Tensor) else to_float(torch.from_numpy(chunk.copy()))

    evaluator = Recording(data, samples or len(data.test_x), *features, device)
    real = train = threshold = None
    per_seed = []
    for seed in seeds:
        evaluator.fake = None
        result = family.evaluate(model.modules, hp, evaluator, seed)
        scores = {k: float(v) for k, v in result.scores.items()}
        if evaluator.fake is not None:
            if real is None:
                real = evaluator.embed(evaluator.real())
                train = evaluator.embed(data.train_x)
                threshold = memorization_threshold(real, train)
            scores.update(sample_checks(real, evaluator.fake, train, threshold))
        scores.update(family.rescore_details(model.modules, hp, evaluator, seed))
        per_seed.append(scores)
    return {"per_seed": per_seed, "samples": evaluator.n}


def rescore(exp: Experiment, top: int = TOP, seeds: int = SEEDS, samples: int | None = None, log=print,
            seconds: float | None = None) -> dict:
    """Re-score `exp`'s top checkpoints (Ray must be up) and write its rescore.json; returns it.
    `seconds`: what it is expected to take, where the caller planned it (else estimated here)."""
    import ray

    from trainables.datasets import load_dataset
    from trainables.features import feature_network
    from trainables.models import family_for

    ranked = exp.ranked_checkpoints(rescored=False)[:top]
    if not ranked:
        raise UsageError(f"{exp.source} has no checkpoint with a finite {exp.objective} to re-score")
    spec = exp.spec
    family = family_for(spec["model"], spec.get("family_source"))
    samples = samples or family.rescore_samples
    in_main = (spec.get("family_source") or {}).get("module") == "__main__"  # a notebook's: the class goes itself
    data = load_dataset(spec["dataset"], spec.get("data_root"), spec.get("subset"), spec.get("data_options") or None)
    # the space the sweep measured in (where `auto` fell back, the one it fell back to)
    kind = (spec.get("feature_network") or {}).get("kind") or spec.get("fid_features", "classifier")
    feature_state, feature_meta = feature_network(kind, data, log=log,
                                                  data_root=spec.get("data_root"), data_options=spec.get("data_options"),
                                                  subset=spec.get("subset"))
    gpus = float((spec.get("resources") or {}).get("gpus_per_worker") or 0)
    task = ray.remote(num_cpus=1, num_gpus=min(gpus, 1.0))(score_checkpoint)
    data_ref, feature_ref = ray.put(data), ray.put((feature_state, feature_meta))
    seed_list = [SEED_BASE + s for s in range(seeds)]
    if seconds is None:
        per_image, _, held_out, _, train = cost_model(exp)
        seconds = estimate(per_image, len(ranked), seeds, samples or held_out,
                           int(ray.cluster_resources().get("CPU", 1)), train)
    log(f"re-scoring the top {len(ranked)} checkpoints of {exp.source}: {seeds} seeds x "
        f"{samples or 'all'} held-out images, {feature_meta['name']} features"
        + (f"; about {seconds:.0f} s" if seconds is not None else ""))
    started = time.time()
    futures = [task.remote(exp.where(ckpt.path).uri, data_ref, feature_ref, seed_list, samples,
                           type(family) if in_main else None) for _, ckpt in ranked]
    outcomes = ray.get(futures)
    entries = []
    for sweep_rank, ((trial, ckpt), outcome) in enumerate(zip(ranked, outcomes), start=1):
        per_seed = outcome["per_seed"]
        names = sorted({k for scores in per_seed for k in scores}, key=lambda k: (k != exp.objective, k))
        means = {k: summary([s.get(k, math.nan) for s in per_seed])["mean"] for k in names}
        entry = {"trial": trial.trial_id, "checkpoint": ckpt.path.relative_to(exp.path).as_posix(), "step": ckpt.step,
                 "sweep_rank": sweep_rank, "sweep_value": ckpt.metrics.get(exp.objective),
                 **summary([s.get(exp.objective, math.nan) for s in per_seed]),
                 "values": [s.get(exp.objective, math.nan) for s in per_seed],
                 "metrics": {k: v for k, v in means.items() if k != exp.objective}}
        for key in ("precision", "recall", "density", "coverage", "memorized_share"):
            if key in means:
                entry[key] = means[key]
        entries.append(entry)
    entries.sort(key=lambda e: exp.score({exp.objective: e["mean"]}))
    report = {"metric": exp.objective, "mode": exp.mode, "samples": outcomes[0]["samples"], "seeds": seed_list,
              "feature_network": feature_meta["name"], "seconds": round(time.time() - started, 1),
              "created": time.strftime("%Y-%m-%d %H:%M:%S"), "checkpoints": entries}
    where = exp.where(exp.path / RESCORE_FILE)
    where.write_text(json.dumps(report, indent=1))
    if exp.remote:  # the mirror too, so a reader of this same load sees it
        (exp.path / RESCORE_FILE).write_text(json.dumps(report, indent=1))
    exp.rescore = report
    return report


def describe(report: dict) -> str:
    """The re-scored table, as the sweep and the CLI print it."""
    metric = report["metric"]
    lines = [f"re-scored ({len(report['seeds'])} seeds x {report['samples']} samples, {report['seconds']} s): "
             f"{metric} mean [95% interval], the sweep's reading and rank"]
    for rank, e in enumerate(report["checkpoints"], start=1):
        extra = "".join(f" {k}={e[k]:.3f}" for k in ("precision", "recall", "memorized_share") if k in e)
        moved = "" if e["sweep_rank"] == rank else f"  (sweep rank {e['sweep_rank']})"
        lines.append(f"  {rank}. {e['trial']} step {e['step']}: {e['mean']:.4g} [{e['ci95'][0]:.4g}, "
                     f"{e['ci95'][1]:.4g}], sweep {e['sweep_value']:.4g}{extra}{moved}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from orchestrator.cluster import check_address, init_ray

    p = Parser(prog="python -m orchestrator.rescore", description=__doc__.split("\n\n")[1])
    p.add_argument("experiment", help="experiment directory or URI (STORAGE/NAME, e.g. s3://bucket/experiments/NAME)")
    p.add_argument("--top", type=positive_int, default=TOP, help=f"how many of the best checkpoints (default {TOP})")
    p.add_argument("--seeds", type=positive_int, default=SEEDS, help=f"sample seeds per checkpoint (default {SEEDS})")
    p.add_argument("--samples", type=positive_int, help="held-out images (and samples) per seed (default: all; "
                                                       "ddpm 2000, its sampling being slow)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    add_family_module(p)
    args = p.parse_args(argv)
    load_family_modules(args)
    check_address(args.address)  # ray.init would retry an address where nothing listens for minutes
    exp = load_experiment(args.experiment)  # bad paths fail here, before Ray starts
    if not exp.ranked_checkpoints(rescored=False):
        raise UsageError(f"{exp.source} has no checkpoint with a finite {exp.objective} to re-score")
    from trainables.models import family_for, family_source

    # the family as loaded now: from --family-module where given, else from where the sweep recorded it
    init_ray(args.address, family_source=family_source(family_for(exp.spec["model"], exp.spec.get("family_source"))))
    try:
        report = rescore(exp, args.top, args.seeds, args.samples)
    except Exception as e:  # a task's error arrives wrapped by Ray: its first line says what failed
        if isinstance(e, UsageError):
            raise
        raise UsageError(f"re-scoring {exp.source} failed: {first_line(getattr(e, 'cause', None) or e)}") from None
    print(describe(report))
    print(f"written: {exp.where(exp.path / RESCORE_FILE).uri}")
    return 0


if __name__ == "__main__":
    run(main)
