"""A sweep of many tiny trials through the real CLI against a bare Ray Tune sweep of as many no-op
trials at the same concurrency, in one run (issue 19, item 4; docs/benchmarks.md row 13).

    python bench/scale.py [--trials 1000] [--cpus-per-worker 0.25] [--storage DIR]

Ours: `gan` on `digits` (16x16, hidden=32: a checkpoint of ~0.2 MB), 2 training steps,
evaluations at steps 0 and 2 on 100 held-out images, FIFO, TPE, no dashboard, no re-scoring. The driver's memory and CPU are sampled every
second (from /proc). Then the experiment folder's and optuna.db's sizes, and the
time `orchestrator.best` and `dashboards.build` take on it. Whether anything grows faster than
linearly shows in the trials finished per minute in each quarter of the sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import ROOT


def bare_tune(trials: int, cpus: float, concurrency: int) -> float:
    """Wall seconds of a Tune sweep of `trials` function trials that report once and return."""
    import ray
    from ray import tune

    def noop(config):
        tune.report({"score": config["x"]})

    ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False, logging_level="ERROR")
    try:
        start = time.perf_counter()
        tune.Tuner(tune.with_resources(noop, {"cpu": cpus}),
                   param_space={"x": tune.uniform(0, 1)},
                   tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=concurrency,
                                               reuse_actors=True),  # as the sweep runs its trials
                   run_config=tune.RunConfig(storage_path=str(Path("/tmp/bench-scale-bare").resolve()),
                                             verbose=0)).fit()
        return time.perf_counter() - start
    finally:
        ray.shutdown()


def rss_and_cpu(pid: int) -> tuple[int, float]:
    """A Linux process's resident bytes and CPU seconds (user + system), from /proc."""
    rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watched(cmd: list[str]) -> tuple[float, dict]:
    """Run `cmd`; its wall seconds and the process's peak RSS and CPU seconds (itself, not its
    children), sampled every second from /proc (Linux)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, cpu = {"rss": 0}, {"s": 0.0}

    def sample():
        while proc.poll() is None:
            try:
                rss, seconds = rss_and_cpu(proc.pid)
            except (OSError, StopIteration, IndexError):
                break
            peak["rss"], cpu["s"] = max(peak["rss"], rss), seconds
            time.sleep(1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed\n{out[-3000:]}")
    return time.perf_counter() - start, {"driver_peak_rss_mb": round(peak["rss"] / 2**20), "driver_cpu_s": round(cpu["s"], 1)}


def folder_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def per_quarter(exp: Path) -> list[float]:
    """Trials finished per minute in each quarter of the sweep, by the time their last report was made."""
    ends = sorted(json.loads(p.read_text().splitlines()[-1])["timestamp"] for p in exp.glob("run_trial_*/result.json")
                  if p.read_text().strip())
    n = len(ends) // 4
    rates = []
    for q in range(4):
        chunk = ends[q * n:(q + 1) * n + 1]
        rates.append(round(60 * (len(chunk) - 1) / max(chunk[-1] - chunk[0], 1e-9), 1))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--cpus-per-worker", type=float, default=0.25)
    p.add_argument("--storage", default="/tmp/bench-scale")
    args = p.parse_args()
    storage = Path(args.storage)
    exp = storage / "scale"
    if exp.exists():
        raise SystemExit(f"{exp} exists; remove it or pass another --storage")
    concurrency = int(((os.cpu_count() or 1) + 1) / (args.cpus_per_worker + 0.01))  # as the sweep works it out

    ours_s, driver = watched([sys.executable, "-m", "orchestrator.sweep", "gan", "--dataset", "digits",
                              "--trials", str(args.trials), "--max-steps", "2", "--eval-every", "2", "--log-every", "1",
                              "--eval-samples", "100", "--scheduler", "fifo", "--set", "hidden=32", "--cpus-per-worker",
                              str(args.cpus_per_worker), "--storage", str(storage), "--name", "scale", "--no-dashboard",
                              "--rescore-top", "0"])
    bare_s = bare_tune(args.trials, args.cpus_per_worker, concurrency)
    timings = {}
    for name, cmd in (("best", ["orchestrator.best", str(exp), "--dst", str(storage / "best")]),
                      ("dashboard", ["dashboards.build", str(exp), "--out", str(storage / "dashboard.html")])):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, check=True, capture_output=True)
        timings[f"{name}_s"] = round(time.perf_counter() - start, 1)
    row = {"trials": args.trials, "concurrency": concurrency, "ours_s": round(ours_s), "bare_tune_s": round(bare_s),
           "ratio": round(ours_s / bare_s, 2), "trials_per_min": round(60 * args.trials / ours_s, 1),
           "bare_trials_per_min": round(60 * args.trials / bare_s, 1), **driver,
           "experiment_mb": folder_mb(exp), "optuna_db_mb": round((exp / "optuna.db").stat().st_size / 2**20, 2),
           **timings, "trials_per_min_by_quarter": per_quarter(exp)}
    print(json.dumps(row, indent=1))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"scale-{args.trials}.json").write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
