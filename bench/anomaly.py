"""One-class anomaly detection on Fashion-MNIST, every class (issue 19, item 1; docs/results.md):
for each class K, a `vae_anomaly` sweep with `--set normal_class=K` (the default space: lr, latent
size, beta; TPE + ASHA; then the final phase trains the winner on), and its trained winner
re-scored on all 10,000 held-out images with a bootstrap 95% interval. The sweep's trials are
scored on the first --eval-samples of the same held-out images (Fashion-MNIST has no separate
validation split), so the re-scored figure shares those images with the selection.

    python bench/anomaly.py [--classes 0 1 ...] [--trials 8] [--max-steps 1200] [--final-steps 2400]
                            [--storage DIR] [--write-docs]

Prints a Markdown table and writes bench/results/anomaly.json after every class (a rerun skips
the classes already there); --write-docs puts the table into docs/results.md between its
ANOMALY_BENCH markers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import ROOT, run_sweep  # noqa: E402  (puts the project on sys.path)
from trainables.experiment import load_experiment  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "anomaly.json"
DOCS = ROOT / "docs" / "results.md"
MARKERS = ("<!-- ANOMALY_BENCH start -->", "<!-- ANOMALY_BENCH end -->")


def one_class(args, k: int) -> dict:
    """Sweep class k as the normal class; its trained winner, re-scored."""
    name = f"class{k}-s{args.seed}"
    wall = run_sweep("vae_anomaly", args.storage, name, "--set", f"normal_class={k}", "--trials", str(args.trials),
                     "--max-steps", str(args.max_steps), "--eval-every", str(args.eval_every),
                     "--final-steps", str(args.final_steps), "--eval-samples", str(args.eval_samples),
                     "--seed", str(args.seed), "--rescore-top", "1")
    exp = load_experiment(args.storage / name)
    winner = json.loads((args.storage / name / "rescore.json").read_text())["checkpoints"][0]
    trial = next(t for t in exp.trials if t.trial_id == winner["trial"])
    params = exp.params_at_best(trial)
    return {"class": k, "name": exp.spec["dataset_info"]["classes"][k], "sweep_auroc": winner["sweep_value"],
            "rescored_auroc": winner["mean"], "ci95": [winner["metrics"]["auroc_boot_low"],
                                                         winner["metrics"]["auroc_boot_high"]],
            "step": winner["step"], "trial_steps": sum(t.last_step for t in exp.trials), "trials": len(exp.trials),
            "params": {k: params[k] for k in ("lr", "latent_dim", "beta")}, "wall_s": round(wall, 1)}


def table(rows: list[dict], args) -> str:
    lines = [f"Budget per class: {args.trials} search trials of up to {args.max_steps} steps (ASHA + TPE, "
             f"an evaluation on {args.eval_samples} held-out images every {args.eval_every} steps), then the "
             f"winner trained {args.final_steps} steps more; seed {args.seed}.", "",
             "| normal class | sweep's best ROC-AUC (first "
             f"{args.eval_samples}) | re-scored ROC-AUC, all 10,000 [95% bootstrap] | at step | winner: lr, latent, beta "
             "| trial-steps | wall s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["params"]
        lines.append(f"| {r['class']} {r['name']} | {r['sweep_auroc']:.3f} | **{r['rescored_auroc']:.3f}** "
                     f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['step']} | {p['lr']:.2g}, {p['latent_dim']}, "
                     f"{p['beta']:.2g} | {r['trial_steps']} | {r['wall_s']:.0f} |")
    if rows:
        lines.append(f"| **mean** | {statistics.mean(r['sweep_auroc'] for r in rows):.3f} | "
                     f"**{statistics.mean(r['rescored_auroc'] for r in rows):.3f}** | | | "
                     f"{sum(r['trial_steps'] for r in rows)} | {sum(r['wall_s'] for r in rows):.0f} |")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = DOCS.read_text()
    start, end = doc.index(MARKERS[0]) + len(MARKERS[0]), doc.index(MARKERS[1])
    DOCS.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=1200)
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--final-steps", type=int, default=2400)
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", type=Path, default=Path(tempfile.gettempdir()) / "anomaly_bench")
    p.add_argument("--write-docs", action="store_true", help="put the table into docs/results.md")
    args = p.parse_args()
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for k in args.classes:
        key = f"{k}-s{args.seed}"
        if key not in done:
            done[key] = one_class(args, k)
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(json.dumps(done, indent=1))
        print(json.dumps(done[key]), flush=True)
    text = table([done[f"{k}-s{args.seed}"] for k in args.classes], args)
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
