"""Benchmark 10 of docs/benchmarks.md: the dashboard of a large sweep, and what its live rebuilds
cost. One real small DCGAN sweep (2 trials of 300 steps, losses every 10 steps, FID every 50)
is copied into experiments of 8, 100 and 1000 trials (each copy a new trial id, its objective
scaled so the trials rank apart; checkpoints keep their JSON and sample grids, not weights).
For each: the CPU and wall time of one build, the page's size, and for the page opened in
headless Chromium (where installed) the time until every figure is drawn; then what a live
dashboard rebuilding every 30 s would take of one core, and the share dashboards.live allows.

    python bench/dashboard.py [--sizes 8 100 1000]

Prints a Markdown table and writes bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import ROOT, run_sweep  # noqa: E402  (puts the project on sys.path)
from dashboards.build import build  # noqa: E402
from dashboards.live import CPU_SHARE  # noqa: E402
from dashboards.page import LiveState  # noqa: E402
from trainables.experiment import load_experiment  # noqa: E402
from trainables.layout import CHECKPOINTS_DIR, RESULT_FILE  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SPACE = 'latent_dim = 16\nwidth = 8\nbatch_size = 32\n[lr_g]\ndistribution = "loguniform"\nlow = 1e-4\nhigh = 2e-3\n'


def copies(source: Path, dest: Path, trials: int) -> Path:
    """`source`'s experiment with `trials` trials: its own, copied under new ids."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "dashboard.html",
                                                                "experiment_state-*", "events.out*"))
    exp = load_experiment(dest)
    originals = exp.trials
    for t in originals:  # the copies stand in for them: no Tune state, statuses from the files
        shutil.rmtree(t.path)
        shutil.rmtree(dest / CHECKPOINTS_DIR / t.trial_id)
    for i in range(trials):
        base = originals[i % len(originals)]
        trial_id = f"{i:08x}"
        folder = dest / f"run_trial_{trial_id}_{i + 1}_copy"
        shutil.copytree(source / base.path.name, folder, ignore=shutil.ignore_patterns("events.out*"))
        scale = 1 + (i * 37 % 101) / 100
        rows = [dict(r, trial_id=trial_id, **({"fid": r["fid"] * scale} if isinstance(r.get("fid"), float) else {}))
                for r in base.results]
        (folder / RESULT_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
        shutil.copytree(source / CHECKPOINTS_DIR / base.trial_id, dest / CHECKPOINTS_DIR / trial_id,
                        ignore=shutil.ignore_patterns("*.safetensors", "*.pt"))
    spec = json.loads((dest / "sweep.json").read_text())
    (dest / "sweep.json").write_text(json.dumps({**spec, "trials": trials, "name": dest.name}))
    return dest


def draw_seconds(page: Path) -> float | None:
    """Seconds from opening the page in headless Chromium until every figure is drawn (and each
    figure's own milliseconds, printed)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--enable-unsafe-swiftshader", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        start = time.time()
        driver.get(page.as_uri())
        while not driver.execute_script("return window.dashboardReady === true"):
            if time.time() - start > 300:
                return None
            time.sleep(0.1)
        drawn = time.time() - start
        print(json.dumps({"milliseconds_per_figure": driver.execute_script("return window.dashboardTimes")}))
        return drawn
    finally:
        driver.quit()


def measure(exp_path: Path, trials: int) -> dict:
    cpu, wall = time.thread_time(), time.perf_counter()
    out = build([load_experiment(exp_path)], live=LiveState(trials))
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return {"trials": trials, "build_cpu_seconds": cpu, "build_wall_seconds": wall,
            "page_bytes": out.stat().st_size, "draw_seconds": draw_seconds(out),
            "cpu_share_every_30s": cpu / 30, "live_cpu_share": min(cpu / 30, CPU_SHARE)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 100, 1000])
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp)
        (storage / "tiny.toml").write_text(SPACE)
        run_sweep("dcgan", storage, "source", "--dataset", "digits", "--space", str(storage / "tiny.toml"),
                  "--trials", "2", "--max-steps", "300", "--eval-every", "50", "--log-every", "10",
                  "--scheduler", "fifo", "--seed", "0")
        build([load_experiment(storage / "source")])  # imports and caches warm, as in a running sweep
        for trials in args.sizes:
            rows.append(measure(copies(storage / "source", storage / f"copies{trials}", trials), trials))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard.json").write_text(json.dumps(rows, indent=1))
    print("\n| trials | one build: CPU s / wall s | page MB | all figures drawn in Chromium s | a rebuild every 30 s, "
          "share of one core | live share (capped at 10%) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        drawn = "-" if r["draw_seconds"] is None else f"{r['draw_seconds']:.1f}"
        print(f"| {r['trials']} | {r['build_cpu_seconds']:.1f} / {r['build_wall_seconds']:.1f} | "
              f"{r['page_bytes'] / 1e6:.1f} | {drawn} | {r['cpu_share_every_30s']:.1%} | {r['live_cpu_share']:.1%} |")


if __name__ == "__main__":
    main()
