"""python -m dashboards.build EXPERIMENT_DIR [EXPERIMENT_DIR ...] [--out FILE] [--top K]

Writes one self-contained HTML page comparing the trials of a sweep (or of several sweeps, e.g.
two model families on one dataset): the leaderboard, training curves of every trial, the
objective over training, sample grids of the best checkpoints, hyperparameters against the
objective with Optuna's importance, and how to pull the best checkpoint or resume.

Plotly's JavaScript and every image (as thumbnails) are inlined, so the page opens from disk with
no network and no server. It reads the experiment's files only (never unpickles), so it works
while a sweep is still running (it shows what exists so far) and on remote storage: an s3://...
experiment is read from a local mirror of its small files (trainables.storage.pull).

This module puts each experiment's section and the page together and writes it; the parts of a
section are in dashboards.section_parts, the figures in dashboards.figures and its siblings.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from dashboards import figures, hyperparameter_figures
from dashboards.page import LiveState, document, esc, plot_div
from dashboards.section_parts import (anomaly_html, duration, fmt, header_html, leaderboard_html, pareto_html,
                                      rescore_html, samples_html)
from trainables.cli import Parser, UsageError, run
from trainables.experiment import load_experiment
from trainables.layout import COMPARISON_FILE, COST_METRICS, DASHBOARD_FILE, UNTRAINED
from trainables.storage import first_line, megabytes
from trainables.trials import Experiment

TOP = 4
LIVE_KEEP_FREE = 64 * 2**20  # a live page is not rebuilt on a disk this close to full: checkpoints come first


def family_labels(spec: dict) -> dict:
    """What the family's registration says (description, losses, metrics, kind of data), for labels
    only. Read when the registry is loaded already (the sweep builds the page at its end): importing
    it means importing torch, torchvision and torchmetrics, seconds to a minute on a busy machine,
    so the command line works from the files alone (which name every reported value)."""
    if "trainables.models" not in sys.modules:
        return {}
    try:
        from trainables.models import family_for

        family = family_for(spec["model"], spec.get("family_source"))
    except Exception:  # an unknown or broken family must not stop the page
        return {}
    return {"description": family.description, "loss_names": list(family.loss_names),
            "metric_names": list(family.metric_names), "data_kind": family.data_kind,
            "inference_modes": list(family.inference_modes), "metric_descriptions": dict(family.metric_descriptions)}


def reported_keys(exp: Experiment) -> tuple[list[str], list[str]]:
    """(values logged every few steps, values only on evaluation steps), from the reports themselves."""
    bookkeeping = {"step", "epoch", "timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid",
                   "time_since_restore", "iterations_since_restore", "images_per_s", "eval_seconds", "done",
                   UNTRAINED, *COST_METRICS}  # costs: constant over a trial, shown where a Pareto search uses them
    logged, evaluated = Counter(), Counter()
    for trial in exp.trials:
        for row in trial.results:
            on_eval = isinstance(row.get("eval_seconds"), (int, float)) and math.isfinite(row["eval_seconds"])
            for key, value in row.items():
                if key in bookkeeping or key.endswith("_best") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)) and math.isfinite(value):
                    (evaluated if on_eval else logged)[key] += 1
    return sorted(logged), sorted(k for k in evaluated if k not in logged)


def experiment_section(exp: Experiment, index: int, top_k: int) -> str:
    labels = family_labels(exp.spec)
    statuses = exp.statuses()
    top = [t.trial_id for t in exp.ranked_trials() if exp.best_of(t)][:top_k]
    logged, evaluated = reported_keys(exp)
    prefix = f"e{index}"
    parts = [f"<h1>{esc(exp.spec.get('name', exp.path.name))}</h1>", header_html(exp, labels, statuses, logged, evaluated),
             "<h2>Leaderboard</h2>", leaderboard_html(exp, statuses, top), rescore_html(exp, f"{prefix}-rescore"),
             pareto_html(exp, f"{prefix}-pareto")]
    options = [("all", "all trials"), ("top", f"the best {len(top)}")] + [(t.trial_id, f"trial {t.trial_id}")
                                                                          for t in exp.ranked_trials()]
    parts.append(
        "<div class='controls'><label>show <select class='show'>"
        + "".join(f"<option value='{esc(v)}'>{esc(text)}</option>" for v, text in options)
        + "</select></label><label>smoothing <input class='smooth' type='range' min='0' max='0.95' step='0.05' value='0'>"
          " <span class='smooth-value'>0.00</span></label><label><input class='logy' type='checkbox'> log y (training curves)"
          "</label></div>")
    curves = figures.curves_figure(exp, list(labels.get("loss_names") or logged), top, "training curves (losses as the family reports them)")
    if curves:
        parts += ["<h2>Training curves</h2>", plot_div(curves, f"{prefix}-losses", "curves")]
    objective = figures.objective_figure(exp, top, statuses)
    parts.append("<h2>Objective over training</h2>")
    parts.append(plot_div(objective, f"{prefix}-objective") if objective else "<p>no evaluation yet</p>")
    others = [k for k in (labels.get("metric_names") or evaluated) if k not in (exp.objective, "kid_std")]
    metrics = figures.curves_figure(exp, others, top, "other evaluation metrics", "lines+markers")
    if metrics:
        parts.append(plot_div(metrics, f"{prefix}-metrics"))
    parts.append(samples_html(exp, labels, top_k))
    parts.append(anomaly_html(exp, top_k, f"{prefix}-roc"))  # nothing unless checkpoints hold a ROC curve
    parts.append("<h2>Hyperparameters vs objective</h2>")
    hp = [(hyperparameter_figures.parallel_figure(exp, top), "parallel"),
          (hyperparameter_figures.scatter_figure(exp, statuses), "scatter")]
    importance, why = hyperparameter_figures.importance_figure(exp)
    hp.append((importance, "importance"))
    shown = [plot_div(fig, f"{prefix}-{name}") for fig, name in hp if fig is not None]
    parts += shown or ["<p>needs at least two trials with a score</p>"]
    if importance is None:
        parts.append(f"<p class='note'>parameter importance: {esc(why)}</p>")
    return (f"<section class='experiment' id='{prefix}' data-top='{esc(json.dumps(top))}'>"
            + "".join(parts) + "</section>")


def comparison_section(experiments: list[Experiment]) -> str:
    rows = []
    for i, exp in enumerate(experiments):
        ranked = exp.ranked_checkpoints()
        best = fmt(float(ranked[0][1].metrics[exp.objective])) if ranked else ""
        counts = Counter(exp.statuses().values())
        rows.append(f"<tr><td><a href='#e{i}'>{esc(exp.spec.get('name'))}</a></td><td>{esc(exp.spec.get('model'))}</td>"
                    f"<td>{esc(exp.spec.get('dataset'))}</td><td>{esc(exp.objective)} ({esc(exp.mode)})</td>"
                    f"<td class='num'><b>{best}</b></td><td>{esc((exp.spec.get('feature_network') or {}).get('name'))}</td>"
                    f"<td>{esc(', '.join(f'{n} {s}' for s, n in counts.most_common()))}</td>"
                    f"<td>{duration(exp.compute_seconds)}</td></tr>")
    features = {(e.spec.get("dataset"), (e.spec.get("feature_network") or {}).get("name")) for e in experiments}
    warning = ("<p class='note'><b>Note:</b> these experiments differ in dataset or FID feature network: their "
               "FID/KID values are not comparable with each other.</p>") if len(features) > 1 else ""
    plots = "".join(plot_div(fig, f"cmp-{i}") for i, fig in enumerate(figures.comparison_figures(experiments)))
    return ("<section class='comparison' id='compare'><h1>Comparison of experiments</h1>"
            "<table><tr><th>experiment</th><th>model</th><th>dataset</th><th>objective</th><th>best</th>"
            "<th>FID features</th><th>trials</th><th>trial time</th></tr>" + "".join(rows) + "</table>"
            + warning + plots + "</section>")


def build(experiments: list[str | Path | Experiment], out: str | Path | None = None, top: int = TOP,
          live: LiveState | None = None) -> Path:
    """The page of `experiments` (folders, URIs, or experiments already loaded) at `out`; `live`:
    one experiment's page while its sweep runs, which says how far it has got and reloads itself."""
    if top < 1:
        raise UsageError(f"--top must be 1 or more, got {top}")
    loaded = [e if isinstance(e, Experiment) else load_experiment(e) for e in experiments]
    # the page's default place: one experiment's own folder; a comparison of several goes to the
    # current folder, so no experiment's own page is replaced
    upload = None if out or len(loaded) > 1 else loaded[0].source
    if not out:
        out = loaded[0].path / DASHBOARD_FILE if len(loaded) == 1 else Path(COMPARISON_FILE).absolute()
    out = Path(out)
    sections = [experiment_section(exp, i, top) for i, exp in enumerate(loaded)]
    names = [str(exp.spec.get("name", exp.path.name)) for exp in loaded]
    if len(loaded) > 1:
        sections.insert(0, comparison_section(loaded))
        nav = "<a href='#compare'>comparison</a>" + "".join(f"<a href='#e{i}'>{esc(n)}</a>" for i, n in enumerate(names))
    else:
        nav = f"<b>{esc(names[0])}</b> &middot; {esc(loaded[0].spec.get('model'))} on {esc(loaded[0].spec.get('dataset'))}"
    if live:
        nav += f" &middot; {esc(live_line(loaded[0], live.total_trials))}"
    page = document(" vs ".join(names) + " - sweep dashboard", nav, "".join(sections),
                    reload_seconds=live.reload_seconds if live else None)
    try:
        write_page(out, page, keep_free=LIVE_KEEP_FREE if live else 0)
    except OSError as e:
        raise UsageError(f"cannot write {out} ({e.strerror or e})" + ("" if live else "; choose another --out")) from None
    if upload is not None and upload.remote:
        try:
            (upload / DASHBOARD_FILE).write_bytes(out.read_bytes())
        except OSError as e:
            raise UsageError(f"cannot write {upload}/dashboard.html ({first_line(e)}); the page is at {out}") from None
    return out


def live_line(exp: Experiment, total: int) -> str:
    """"running: 5 of 16 trials, 2 done, updated 12:34:56": the live page's state."""
    done = sum(s in ("finished", "stopped early", "errored") for s in exp.statuses().values())
    return f"running: {len(exp.trials)} of {total} trials, {done} done, updated {time.strftime('%H:%M:%S')}"


def write_page(out: Path, page: str, keep_free: int = 0) -> None:
    """A new file of our own (a planted link is never followed), then renamed over the page:
    readers of a page being rebuilt see the old one or the new one. A write that fails (a full disk)
    leaves nothing behind. `keep_free`: refuse (ENOSPC) unless that many bytes stay free after it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    data = page.encode("utf-8")
    free = shutil.disk_usage(out.parent).free if keep_free else 0
    if keep_free and free - len(data) < keep_free:
        raise OSError(errno.ENOSPC, f"{megabytes(free)} free; the live page leaves {megabytes(keep_free)} "
                                    f"for checkpoints")
    with tempfile.NamedTemporaryFile("wb", dir=out.parent, prefix=f".{out.name}.", suffix=".tmp",
                                     delete=False) as tmp:
        name = tmp.name
    try:
        Path(name).write_bytes(data)
        os.chmod(name, 0o644)
        os.replace(name, out)
    except OSError:
        os.unlink(name)
        raise


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m dashboards.build", description=__doc__.split("\n\n")[1])
    p.add_argument("experiments", nargs="+", help="experiment directories or URIs (STORAGE/NAME, e.g. "
                                                  "s3://bucket/experiments/NAME); several go on one page")
    p.add_argument("--out", help=f"output file (default: {DASHBOARD_FILE} in the experiment, for remote storage also "
                                 f"uploaded there, the local copy in its mirror under ~/.cache/gen-orchestrator; "
                                 f"several experiments: {COMPARISON_FILE} in the current folder)")
    p.add_argument("--top", type=int, default=TOP, help=f"how many of the best trials/checkpoints to highlight and "
                                                          f"show samples of (default {TOP})")
    args = p.parse_args(argv)
    print(build(args.experiments, args.out, args.top))
    return 0


if __name__ == "__main__":
    run(main)
