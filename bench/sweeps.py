"""Benchmarks 3, 5 and 6 of docs/benchmarks.md: whole sweeps of DCGAN on Fashion-MNIST, through
the real CLI, side by side in one run.

3. Sweep efficiency: the compute (trial-steps, summed over trials) that each search needs to reach
   the best FID that 16 random-search trials run to full length reach. Three sweeps of 16 trials:
   random search (Optuna's RandomSampler), Optuna TPE, and Optuna TPE + ASHA early stopping.
   Writes their best-FID-vs-compute curves to bench/results/sweep_efficiency.html.
5. Data path: dataset bytes read from disk and decoded per sweep (the driver, once) vs per trial
   (a Ray worker getting the dataset from the object store, as the worker loop does), and the
   peak memory (PSS of every process, less what ran before) of a sweep with 2 concurrent trials.
6. Scaling: wall time of an 8-trial sweep (fifo, so every trial runs in full) with
   --max-concurrent 1 vs 2 on this machine's cores, and with 2 trials at a time across a local
   2-node Ray cluster (a head with no CPUs, as cluster.yaml's, and two worker nodes).

    python bench/sweeps.py [--only efficiency scaling data] [--steps N] [--scaling-steps N]

Prints Markdown tables and writes bench/results/sweeps.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, run_sweep  # noqa: E402  (puts the project on sys.path)
from trainables.experiment import load_experiment  # noqa: E402
from trainables.trials import is_untrained  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SEARCHES = {  # name: sweep options
    "random": ["--searcher", "random", "--scheduler", "fifo"],
    "optuna": ["--searcher", "tpe", "--scheduler", "fifo"],
    "optuna+asha": ["--searcher", "tpe", "--scheduler", "asha"],
}


def sweep(storage: Path, name: str, *options: str) -> float:
    """One DCGAN sweep; returns its wall time in seconds."""
    return run_sweep("dcgan", storage, name, *options)


def best_vs_compute(exp, trials=None) -> list[tuple[int, float]]:
    """(trial-steps spent so far, best FID so far) after each report of the sweep's trials (or of
    `trials`), in time order."""
    events = sorted((r.get("timestamp", 0), r.get("time_total_s", 0), t.trial_id, r["step"],
                     math.nan if is_untrained(r) else r.get("fid", math.nan))  # the untrained model: a reference
                    for t in (exp.trials if trials is None else trials) for r in t.results)
    steps: dict[str, int] = {}
    best, curve = math.inf, []
    for _, _, trial, step, fid in events:
        steps[trial] = max(steps.get(trial, 0), step)
        if fid == fid:  # evaluated at this report
            best = min(best, fid)
        curve.append((sum(steps.values()), best))
    return curve


def compute_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((compute for compute, best in curve if best <= target), None)


def efficiency(storage: Path, trials: int, steps: int, eval_every: int) -> dict:
    budget = ["--trials", str(trials), "--max-steps", str(steps), "--eval-every", str(eval_every),
              "--log-every", str(eval_every // 2), "--max-concurrent", "2"]
    runs = {}
    for search, options in SEARCHES.items():
        wall = sweep(storage, search, *budget, *options)
        exp = load_experiment(storage / search)
        curve = best_vs_compute(exp)
        runs[search] = {"wall_seconds": wall, "curve": curve, "best_fid": curve[-1][1],
                        "trial_steps": curve[-1][0], "trials": len(exp.trials)}
        print(json.dumps({search: {k: v for k, v in runs[search].items() if k != "curve"}}), flush=True)
    full = trials * steps  # what random search spends: every trial to full length
    target = runs["random"]["best_fid"]
    for run in runs.values():
        reached = compute_to_reach(run["curve"], target)
        run["steps_to_random_best"] = reached
        run["share_of_random_compute"] = None if reached is None else reached / full
    write_curves(runs, full)
    return {"trials": trials, "max_steps": steps, "eval_every": eval_every, "random_best_fid": target,
            "random_compute": full, "runs": runs}


def write_curves(runs: dict, full: int) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for search, run in runs.items():
        xs, ys = zip(*[(c / full, b) for c, b in run["curve"] if b < math.inf])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", name=search))
    fig.update_layout(title="DCGAN on Fashion-MNIST: best FID vs compute (1 = 16 full-length trials)",
                      xaxis_title="trial-steps / random search's total", yaxis_title="best FID so far",
                      yaxis_type="log")
    RESULTS.mkdir(exist_ok=True)
    fig.write_html(RESULTS / "sweep_efficiency.html", include_plotlyjs=True)


def pss_bytes() -> tuple[int, int]:
    """Proportional set size (shared pages split among their users) of every process on the
    machine, and of the trials' own processes (`ray::ImplicitFunc`: one-worker trials train there)."""
    total = trials = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    total += pss
                    trials += pss if title.startswith(b"ray::ImplicitFunc") else 0
                    break
        except OSError:  # gone, or not ours to read
            continue
    return total, trials


class PeakMemory:
    """Samples PSS every 0.5 s while in the `with` block: the peak of the machine's total less
    what it was at the start, and the peak of the trial processes' sum."""

    def __enter__(self):
        self.base = self.peak = pss_bytes()[0]
        self.trials_peak = 0
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            total, trials = pss_bytes()
            self.peak, self.trials_peak = max(self.peak, total), max(self.trials_peak, trials)
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()

    @property
    def added(self) -> int:
        return self.peak - self.base


def trial_nodes(exp) -> set[str]:
    """The Ray nodes the trials' training workers ran on (kept in each checkpoint's config.json)."""
    nodes = set()
    for folder in exp.path.glob("checkpoints/*/checkpoint_*/config.json"):
        nodes.update(json.loads(folder.read_text()).get("worker_nodes", []))
    return nodes


def trial_gaps(exp_path: Path) -> list[float]:
    """Seconds from each trial's last report to the next trial's start, in a sweep that runs one
    trial at a time: scheduling the next trial, starting its process and its imports, which
    Tune's time_total_s (from the trial's start) leaves out. From Tune's experiment state."""
    state = json.loads(sorted(exp_path.glob("experiment_state-*.json"))[-1].read_text())
    meta = [json.loads(m) if isinstance(m, str) else m for _, m in state["trial_data"]]
    spans = sorted((m["start_time"], m["last_result_time"]) for m in meta)
    return [later[0] - earlier[1] for earlier, later in zip(spans, spans[1:])]


def start_up(storage: Path, steps: int, trials: int, *options: str) -> dict:
    """Per-trial start-up of one-at-a-time trials: the gap before each trial, and what its own
    clock counts before its first training interval (time_total_s of the step-0 report)."""
    name = "startup" + "".join(options).replace("-", "_")
    wall = sweep(storage, name, "--trials", str(trials), "--max-steps", str(steps), "--eval-every", str(steps),
                 "--log-every", str(steps), "--scheduler", "fifo", "--max-concurrent", "1", *options)
    exp = load_experiment(storage / name)
    first = [t.results[0]["time_total_s"] for t in exp.trials]
    gaps = trial_gaps(storage / name)
    return {"wall_seconds": wall, "median_gap_seconds": statistics.median(gaps),
            "median_first_report_seconds": statistics.median(first),
            "median_trial_seconds": statistics.median(t.results[-1]["time_total_s"] for t in exp.trials)}


def scaling(storage: Path, steps: int) -> dict:
    from ray.cluster_utils import Cluster

    budget = ["--trials", "8", "--max-steps", str(steps), "--eval-every", str(steps // 2),
              "--log-every", str(steps // 4), "--scheduler", "fifo"]
    out = {"trials": 8, "max_steps": steps}
    out["concurrent_1_seconds"] = sweep(storage, "one", *budget, "--max-concurrent", "1")
    out["concurrent_1_median_gap_seconds"] = statistics.median(trial_gaps(storage / "one"))
    with PeakMemory() as memory:
        out["concurrent_2_seconds"] = sweep(storage, "two", *budget, "--max-concurrent", "2")
    out["peak_added_memory_bytes_2_concurrent"] = memory.added
    out["peak_trial_processes_bytes_2_concurrent"] = memory.trials_peak
    # as cluster.yaml: the head runs no trials; each worker node offers one core's trial plus its
    # idle trial driver (the extra logical CPU a local sweep's Ray gets, see orchestrator.sweep)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        out["two_nodes_seconds"] = sweep(storage, "nodes", *budget, "--max-concurrent", "2",
                                         "--address", cluster.address)
        out["two_nodes_worker_nodes"] = len(trial_nodes(load_experiment(storage / "nodes")))
    finally:
        cluster.shutdown()
    out["ratio_2_vs_1"] = out["concurrent_2_seconds"] / out["concurrent_1_seconds"]
    out["ratio_nodes_vs_1"] = out["two_nodes_seconds"] / out["concurrent_1_seconds"]
    return out


def read_bytes() -> int:
    """Bytes this process has read through read() calls (from disk or page cache)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def data_path() -> dict:
    """The sweep's driver decodes the dataset once and puts it in the object store; each trial's
    workers `ray.get` it. Measured here the same way, with two Ray workers standing in for trials."""
    import numpy as np
    import ray

    from trainables.datasets import load_dataset

    before = read_bytes()
    data = load_dataset("fashion_mnist")
    read = read_bytes() - before
    decoded = sum(a.nbytes for a in vars(data).values() if isinstance(a, np.ndarray))

    @ray.remote(num_cpus=1)
    def trial_reads(ref_box: list) -> dict:
        import resource

        start, rss = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        got = ray.get(ref_box[0])
        arrays = [a for a in vars(got).values() if isinstance(a, np.ndarray)]
        return {"read_bytes": read_bytes() - start,
                "max_rss_growth_bytes": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024,
                "zero_copy": all(not a.flags.writeable and not a.flags.owndata for a in arrays)}

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ref = ray.put(data)
        per_trial = ray.get([trial_reads.remote([ref]) for _ in range(2)])
    finally:
        ray.shutdown()
    return {"dataset": data.name, "sweep_read_bytes": read, "sweep_decoded_bytes": decoded, "per_trial": per_trial}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", choices=["efficiency", "scaling", "data"], help="default: all")
    p.add_argument("--steps", type=int, default=600, help="full trial length of the efficiency sweeps (default 600, "
                                                          "as --quick)")
    p.add_argument("--eval-every", type=int, default=100, help="their evaluation cadence (default 100)")
    p.add_argument("--trials", type=int, default=16, help="trials of each efficiency sweep (default 16)")
    p.add_argument("--scaling-steps", type=int, default=200, help="trial length of the scaling sweeps (default 200)")
    args = p.parse_args()
    only = args.only or ["data", "scaling", "efficiency"]
    RESULTS.mkdir(exist_ok=True)
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        if "data" in only:
            results["data"] = data_path()
            print(json.dumps(results["data"]), flush=True)
        if "scaling" in only:
            results["scaling"] = scaling(Path(tmp), args.scaling_steps)
            print(json.dumps(results["scaling"]), flush=True)
            results["start_up"] = {"in_process": start_up(Path(tmp), 50, 4),
                                   "torch_trainer": start_up(Path(tmp), 50, 4, "--torch-trainer")}
            print(json.dumps(results["start_up"]), flush=True)
        if "efficiency" in only:
            results["efficiency"] = efficiency(Path(tmp), args.trials, args.steps, args.eval_every)
    (RESULTS / "sweeps.json").write_text(json.dumps(results, indent=1))
    print_tables(results)


def print_tables(results: dict) -> None:
    if "efficiency" in results:
        e = results["efficiency"]
        print(f"\n3. {e['trials']} trials of up to {e['max_steps']} steps; random search's best FID "
              f"{e['random_best_fid']:.2f} after {e['random_compute']} trial-steps\n")
        print("| search | trials | trial-steps spent | best FID | wall s | trial-steps to random's best | "
              "share of random's compute (target <= 40%) |")
        print("|---|---|---|---|---|---|---|")
        for search, r in e["runs"].items():
            share = "never" if r["share_of_random_compute"] is None else f"{r['share_of_random_compute']:.0%}"
            print(f"| {search} | {r['trials']} | {r['trial_steps']} | {r['best_fid']:.2f} | {r['wall_seconds']:.0f} "
                  f"| {r['steps_to_random_best'] or '-'} | {share} |")
    if "data" in results:
        d = results["data"]
        print(f"\n5. {d['dataset']}: the sweep reads {d['sweep_read_bytes'] / 1e6:.1f} MB and decodes "
              f"{d['sweep_decoded_bytes'] / 1e6:.1f} MB once; per trial: "
              + "; ".join(f"{t['read_bytes'] / 1e6:.3f} MB read, RSS +{t['max_rss_growth_bytes'] / 1e6:.1f} MB, "
                          f"zero-copy {t['zero_copy']}" for t in d["per_trial"]))
    if "start_up" in results:
        print("\n2. start-up, 4 trials of 50 steps one at a time (medians)\n")
        print("| trials | gap before a trial s | trial's own clock at its step-0 report s | trial s |")
        print("|---|---|---|---|")
        for kind, r in results["start_up"].items():
            print(f"| {kind} | {r['median_gap_seconds']:.1f} | {r['median_first_report_seconds']:.1f} "
                  f"| {r['median_trial_seconds']:.1f} |")
    if "scaling" in results:
        s = results["scaling"]
        print(f"\n6. 8 trials of {s['max_steps']} steps: max_concurrent 1 {s['concurrent_1_seconds']:.0f} s, "
              f"2 {s['concurrent_2_seconds']:.0f} s ({s['ratio_2_vs_1']:.2f}x), 2 nodes "
              f"{s['two_nodes_seconds']:.0f} s ({s['ratio_nodes_vs_1']:.2f}x, workers on "
              f"{s['two_nodes_worker_nodes']} nodes); peak added memory with 2 concurrent "
              f"{s['peak_added_memory_bytes_2_concurrent'] / 1e9:.2f} GB (Ray, the driver and the trials), of which "
              f"the two trial processes {s['peak_trial_processes_bytes_2_concurrent'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
