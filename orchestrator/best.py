"""python -m orchestrator.best EXPERIMENT_DIR [--top K] [--dst DIR]: export the best checkpoints.

Ranks every kept checkpoint of every trial by the experiment's objective (a GAN's best checkpoint
is often not its last), by the re-scored mean where orchestrator.rescore wrote rescore.json, and
copies the top K, each with its config.json, metrics.json and sample grid, to
DST/rank<N>-<trial>-step<S>/. Reads files only, never unpickles. EXPERIMENT may be a URI
(s3://...): its small files are mirrored under ~/.cache/gen-orchestrator/remote/ and only the
exported checkpoints' weights are downloaded. `--pareto` exports the front of a Pareto sweep
(`orchestrator.sweep --objectives OBJECTIVE,COST`) instead, cheapest first, to DST/front<N>-...
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from trainables.cli import Parser, UsageError, run
from trainables.experiment import load_experiment
from trainables.layout import BEST_DIR, BEST_FILE, METRICS, RESCORE_FILE
from trainables.storage import pull
from trainables.trials import Experiment

SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def within(path: Path, folder: Path) -> Path:
    """`path`, once it is sure to stay inside `folder` with symbolic links followed."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise UsageError(f"{path} leads outside {folder} (a symbolic link?); remove it or pass another --dst")
    return path


def remove(path: Path) -> None:
    """Delete an earlier export; a symbolic link is removed itself, never what it points to."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def export_best(experiment: str | Path | Experiment, top: int = 1, dst: str | Path | None = None,
                pareto: bool = False) -> list[Path]:
    """The top K checkpoints copied to `dst` (`pareto`: the front's, cheapest first, instead);
    `experiment` is a folder, a URI or one already loaded."""
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    if pareto and not exp.cost:
        raise UsageError(f"{exp.source} searched one objective; --pareto exports the front of a sweep run with "
                         f"--objectives {exp.objective},COST")
    ranked = exp.pareto_front() if pareto else exp.ranked_checkpoints()[:top]
    if not ranked:
        raise UsageError(f"{exp.path} has no checkpoint with a finite {exp.objective}"
                         + (f" and {exp.cost}" if pareto else "") + " yet")
    knee = exp.knee(ranked) if pareto else None
    if dst:
        dst = Path(dst)
    elif exp.remote:  # not inside the experiment's mirror, which follows the store
        dst = Path(BEST_DIR) / SAFE.sub("_", exp.path.name)
    else:
        dst = within(exp.path / BEST_DIR, exp.path)  # a planted `best` link must not lead out
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --dst {dst} ({e.strerror or e}); choose another --dst") from None
    rescored = {e["checkpoint"]: e for e in exp.rescored_entries()}
    exported, summary = [], []
    for rank, (trial, ckpt) in enumerate(ranked, start=1):
        # names come from metadata: keep them to one safe path component inside dst
        target = dst / SAFE.sub("_", f"{'front' if pareto else 'rank'}{rank}-{trial.trial_id}-step{ckpt.step}")
        remove(target)
        if exp.remote:  # weights and all, from the store
            pull(exp.where(ckpt.path), target, weights=True)
            if not (target / "model.safetensors").is_file():
                raise UsageError(f"{exp.where(ckpt.path)} is gone (pruned since it was listed?); run best again")
        else:
            shutil.copytree(ckpt.path, target)
        exported.append(target)
        summary.append({"rank": rank, "trial": trial.trial_id, "step": ckpt.step, "path": str(target),
                        exp.objective: ckpt.metrics.get(exp.objective), "hp": trial.params,
                        "source": str(exp.where(ckpt.path))})
        if pareto:
            summary[-1].update({exp.cost: ckpt.metrics.get(exp.cost), "knee": rank - 1 == knee})
        again = rescored.get(ckpt.path.relative_to(exp.path).as_posix())
        if again:
            summary[-1]["rescored"] = {k: again.get(k) for k in ("mean", "std", "ci95", "values")}
    remove(dst / BEST_FILE)  # a link there would be written through
    ranked_by = f"re-scored mean ({RESCORE_FILE})" if rescored else "the sweep's reading"
    if pareto:
        ranked_by = f"the Pareto front of {exp.objective} and {exp.cost} by the sweep's reading, cheapest first"
    (dst / BEST_FILE).write_text(json.dumps({"objective": exp.objective, "mode": exp.mode, "ranked_by": ranked_by,
                                             "checkpoints": summary}, indent=1))
    return exported


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m orchestrator.best", description=__doc__)
    p.add_argument("experiment", help="experiment directory or URI (STORAGE/NAME, e.g. s3://bucket/experiments/NAME)")
    p.add_argument("--top", type=int, help="how many checkpoints to export (default 1)")
    p.add_argument("--dst", help="where to copy them (default EXPERIMENT/best; for remote storage ./best/NAME)")
    p.add_argument("--pareto", action="store_true",
                   help="export the Pareto front of a sweep run with --objectives (every checkpoint on it, cheapest "
                        "first; best.json marks the knee) instead of the top K")
    p.add_argument("--register-mlflow", metavar="URI",
                   help="also register the best checkpoint as a version of an MLflow registered model (weights, "
                        "config.json, metrics.json, samples.png as artifacts; the sweep's name as a tag)")
    p.add_argument("--model-name", help="the registered model's name (with --register-mlflow)")
    args = p.parse_args(argv)
    if args.pareto and args.top is not None:
        raise UsageError("--pareto exports the whole front; leave out --top")
    args.top = 1 if args.top is None else args.top
    if args.top < 1:
        raise UsageError(f"--top must be 1 or more, got {args.top}")
    if bool(args.register_mlflow) != bool(args.model_name):
        raise UsageError("--register-mlflow URI and --model-name NAME go together")
    if args.register_mlflow and args.pareto:
        raise UsageError("--register-mlflow registers the one best checkpoint; export the front (--pareto) on its own")
    if args.register_mlflow:
        from orchestrator.tracking import check_mlflow

        check_mlflow(args.register_mlflow)
    exp = load_experiment(args.experiment)  # once: a remote one is mirrored
    if exp.rescored_entries() and not args.pareto:
        print(f"ranked by the re-scored mean over {len(exp.rescore.get('seeds', []))} seeds ({RESCORE_FILE}, "
              f"{exp.rescore.get('created', '')}); checkpoints it did not re-score follow by the sweep's reading")
    exported = export_best(exp, args.top, args.dst, pareto=args.pareto)
    if exp.feature_space:
        print(f"scores measured in the {exp.feature_space} feature space")
    summary = json.loads((exported[0].parent / BEST_FILE).read_text())["checkpoints"]
    for path, entry in zip(exported, summary):
        metrics = json.loads((path / METRICS).read_text())
        cost = f" {exp.cost}={metrics.get(exp.cost):.4g}" + (" (knee)" if entry.get("knee") else "") if args.pareto else ""
        rescored = entry.get("rescored") if isinstance(entry.get("rescored"), dict) else {}
        mean = f" (re-scored mean {rescored['mean']:.4g})" if isinstance(rescored.get("mean"), (int, float)) else ""
        print(f"{path}  {exp.objective}={metrics.get(exp.objective):.4g}{mean}{cost} step={metrics.get('step')}")
    if args.register_mlflow:
        from orchestrator.tracking import register_best

        sweep = str(exp.spec.get("name") or exp.path.name)
        tags = {"sweep": sweep, "model": str(exp.spec.get("model")), "dataset": str(exp.spec.get("dataset")),
                "ranked_by": "re-scored mean" if exp.rescored_entries() else "the sweep's reading"}
        version = register_best(args.register_mlflow, args.model_name, exported[0], tags)
        print(f"registered {exported[0].name} as {args.model_name} version {version} at {args.register_mlflow}")
    return 0


if __name__ == "__main__":
    run(main)
