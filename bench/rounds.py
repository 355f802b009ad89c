"""Sweeps in rounds against one sweep at equal compute (issue 18; docs/results.md): DCGAN on
Fashion-MNIST, ASHA + TPE, trials of up to 600 steps, no final phase.

- round 1: a wide 8-trial sweep of the default space;
- round 2: an 8-trial sweep of a narrow space around round 1's best (learning rates within 3x of
  it, beta1 within 0.15, the choices fixed to its), warm-started from round 1 (`--warm-start`);
- against: one 16-trial sweep of the default space.

Each sweep's best checkpoint is re-scored (3 seeds x 10,000 held-out images), so the comparison is
not a comparison of lucky single readings; trial-steps say what each spent.

    python bench/rounds.py [--seed S] [--storage DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, run_sweep

BUDGET = ["--max-steps", "600", "--eval-every", "150", "--log-every", "50"]


def narrow_space(params: dict) -> str:
    """A TOML space around one trial's hyperparameters."""
    lines = []
    for key in ("lr_g", "lr_d"):
        lines += [f"[{key}]", 'distribution = "loguniform"', f"low = {params[key] / 3:.3g}", f"high = {params[key] * 3:.3g}"]
    beta = params["beta1"]
    lines += ["[beta1]", 'distribution = "uniform"', f"low = {max(0.0, beta - 0.15):.3f}", f"high = {min(0.95, beta + 0.15):.3f}"]
    fixed = [f"{k} = {json.dumps(params[k])}" for k in ("latent_dim", "batch_size", "diffaug") if k in params]
    return "\n".join(fixed + [""] + lines) + "\n"


def best(storage: Path, name: str) -> dict:
    """The sweep's best checkpoint, re-scored."""
    from trainables.experiment import load_experiment

    proc = subprocess.run([sys.executable, "-m", "orchestrator.rescore", str(storage / name), "--top", "1"], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"rescore {name} failed\n{proc.stderr[-2000:]}")
    again = json.loads((storage / name / "rescore.json").read_text())["checkpoints"][0]
    exp = load_experiment(storage / name)
    trial, ckpt = exp.ranked_checkpoints()[0]
    return {"sweep": name, "trials": len(exp.trials), "trial_steps": sum(t.last_step for t in exp.trials),
            "sweep_fid": ckpt.metrics["fid"], "rescored_fid": again["mean"], "ci95": again["ci95"],
            "params": exp.params_at_best(trial)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", type=Path, default=Path(tempfile.gettempdir()) / "rounds")
    args = p.parse_args()
    seed = ["--seed", str(args.seed)]
    one, two, single = (f"{n}-s{args.seed}" for n in ("round1", "round2", "single16"))
    walls = {one: run_sweep("dcgan", args.storage, one, "--trials", "8", *BUDGET, *seed)}
    first = best(args.storage, one)
    space = args.storage / f"narrow-s{args.seed}.toml"
    space.write_text(narrow_space(first["params"]))
    walls[two] = run_sweep("dcgan", args.storage, two, "--trials", "8", "--space", str(space),
                           "--warm-start", str(args.storage / one), *BUDGET, *seed)
    walls[single] = run_sweep("dcgan", args.storage, single, "--trials", "16", *BUDGET, *seed)
    rows = [first, best(args.storage, two), best(args.storage, single)]
    print(f"narrow space of round 2:\n{space.read_text()}")
    print("| sweep | trials | trial-steps | sweep's best FID | re-scored FID [95%] | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sweep']} | {r['trials']} | {r['trial_steps']} | {r['sweep_fid']:.1f} | {r['rescored_fid']:.1f} "
              f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] | {walls[r['sweep']]:.0f} |")
    rounds = min(rows[:2], key=lambda r: r["rescored_fid"])
    steps = rows[0]["trial_steps"] + rows[1]["trial_steps"]
    print(f"two rounds: {rounds['rescored_fid']:.1f} in {steps} trial-steps; one sweep: {rows[2]['rescored_fid']:.1f} in "
          f"{rows[2]['trial_steps']}; ratio {rounds['rescored_fid'] / rows[2]['rescored_fid']:.2f}x FID at "
          f"{steps / rows[2]['trial_steps']:.2f}x compute" if not math.isnan(rows[2]["rescored_fid"]) else "")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"rounds-s{args.seed}.json").write_text(json.dumps({"sweeps": rows, "wall_s": walls}, indent=1))


if __name__ == "__main__":
    main()
