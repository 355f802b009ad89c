"""The winner's curse (issue 16; docs/results.md): how far the sweep's single readings are from the
re-scored values of the same checkpoints, and how often the sweep's winner stays the winner.

For each seed, a `make demo`-size sweep (`dcgan --quick --seed S`) that re-scores its top 5
checkpoints at its end (3 sample seeds x every held-out image, as `--rescore-top 5` does by
default). An experiment already in STORAGE is reused. Then, from each rescore.json:

- whether the sweep's rank-1 checkpoint is still rank 1 after re-scoring, and where it went;
- the gap between the sweep's reading (1000 samples, one seed) and the re-scored mean;
- the re-scored checkpoints with precision and recall, to show what tells apart similar FIDs;
- the re-scoring's own wall time (docs/benchmarks.md row 11).

    python bench/winners_curse.py [--seeds 1 2 3] [--storage DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT  # noqa: E402  (puts the project on sys.path)


def sweep(storage: Path, seed: int) -> Path:
    path = storage / f"curse-s{seed}"
    if not (path / "rescore.json").is_file():
        proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "dcgan", "--quick", "--seed", str(seed),
                               "--storage", str(storage), "--name", path.name, "--rescore-top", "5"],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"sweep {path.name} failed\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--storage", type=Path, default=Path(tempfile.gettempdir()) / "winners-curse")
    args = p.parse_args()
    print("| seed | sweep's rank 1 (FID, 1 reading) | its re-scored FID [95% interval] | its re-scored rank | "
          "re-scored rank 1 (sweep rank) | mean gap sweep - re-scored | re-scoring s |")
    print("|---|---|---|---|---|---|---|")
    detail, stayed, gaps = [], 0, []
    for seed in args.seeds:
        report = json.loads((sweep(args.storage, seed) / "rescore.json").read_text())
        entries = report["checkpoints"]
        first = next(e for e in entries if e["sweep_rank"] == 1)
        rank = entries.index(first) + 1
        stayed += rank == 1
        gap = statistics.mean(e["sweep_value"] - e["mean"] for e in entries)
        gaps.append(gap)
        print(f"| {seed} | {first['trial']} @ {first['step']}: {first['sweep_value']:.1f} | {first['mean']:.1f} "
              f"[{first['ci95'][0]:.1f}, {first['ci95'][1]:.1f}] | {rank} | {entries[0]['trial']} @ {entries[0]['step']} "
              f"({entries[0]['sweep_rank']}) | {gap:+.1f} | {report['seconds']:.0f} |")
        detail += [(seed, e) for e in entries]
    print(f"\nthe sweep's winner stayed rank 1 in {stayed} of {len(args.seeds)} sweeps; mean gap over all "
          f"re-scored checkpoints {statistics.mean(gaps):+.1f} FID\n")
    print("| seed | checkpoint | sweep rank | sweep FID | re-scored FID (std) | precision | recall | density | coverage "
          "| memorized |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed, e in detail:
        print(f"| {seed} | {e['trial']} @ {e['step']} | {e['sweep_rank']} | {e['sweep_value']:.1f} | {e['mean']:.1f} "
              f"({e['std']:.1f}) | {e['precision']:.3f} | {e['recall']:.3f} | {e['density']:.3f} | "
              f"{e['coverage']:.3f} | {e['memorized_share']:.3f} |")


if __name__ == "__main__":
    main()
