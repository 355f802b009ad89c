"""The dashboard's Plotly figures, each built from an Experiment (files only).

The best K trials get a trace each; every other trial shares one grey trace per panel (its
curves separated by gaps), so a 100-trial sweep draws tens of traces, not hundreds. Each point
carries its trial id in `customdata`, which is how the page's controls show one trial, the best
K or all. Values are rounded to 5 significant digits and long curves are decimated, which keeps
a page of a 100-trial sweep small.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from search_spaces import SpaceError, read_space
from trainables.trials import Experiment, Trial
from trainables.layout import STUDY_FILE

PALETTE = qualitative.Plotly + qualitative.D3
OTHER = "rgba(110,110,110,0.35)"  # trials outside the best K
POINTS_PER_PAGE = 60_000  # curve points the whole page may carry; each curve gets its share
MARKED_POINTS = 3_000  # the grey trace of the other trials draws markers up to this many points
MARGIN = dict(l=60, r=20, t=60, b=45)


def rounded(values: list[float], digits: int = 5) -> list[float | None]:
    return [float(f"{v:.{digits}g}") if v is not None and math.isfinite(v) else None for v in values]


def decimate(steps: list[int], values: list[float], cap: int) -> tuple[list[int], list[float]]:
    """At most `cap` evenly spaced points, the first and the last kept."""
    if len(steps) <= cap or cap < 2:
        return steps, values
    picks = sorted({round(i * (len(steps) - 1) / (cap - 1)) for i in range(cap)})
    return [steps[i] for i in picks], [values[i] for i in picks]


def colors(exp: Experiment, top: list[str]) -> dict[str, str]:
    """The best K trials get palette colors, every other trial one grey."""
    return {t.trial_id: PALETTE[top.index(t.trial_id) % len(PALETTE)] if t.trial_id in top else OTHER
            for t in exp.trials}


def search_space(spec: dict) -> tuple[dict[str, dict], dict]:
    """The sweep's space from sweep.json, read by search_spaces: ({searched name: its table},
    {fixed name: value}); nothing if it can't be read."""
    try:
        space = read_space(spec.get("space_toml") or "", None, spec.get("space_file") or "search space",
                           spec.get("overrides"))
    except SpaceError:
        space = {}
    searched = {k: v for k, v in space.items() if isinstance(v, dict)}
    return searched, {k: v for k, v in space.items() if not isinstance(v, dict)}


def is_log(spec: dict, key: str) -> bool:
    return str(search_space(spec)[0].get(key, {}).get("distribution", "")).startswith("log")


def spans_decades(values: list[float]) -> bool:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 20


def log_buttons() -> list[dict]:
    return [dict(type="buttons", direction="right", x=1, xanchor="right", y=1.12, yanchor="bottom", showactive=True,
                 buttons=[dict(label="linear", method="relayout", args=[{"yaxis.type": "linear"}]),
                          dict(label="log", method="relayout", args=[{"yaxis.type": "log"}])])]


def trial_traces(curves: list[tuple[Trial, list, list]], top: list[str], color: dict[str, str], label: str,
                 mode: str = "lines", shown: set | None = None) -> list[go.Scatter]:
    """Scatter traces of (trial, steps, values): one per trial of the best K, one for all others."""
    shown = set() if shown is None else shown
    hover = f"trial %{{customdata}}<br>step %{{x}}<br>{label} %{{y:.4g}}<extra></extra>"
    traces, others = [], ([], [], [])
    rank = {tid: i for i, tid in enumerate(top)}
    for trial, steps, values in sorted(curves, key=lambda c: rank.get(c[0].trial_id, len(top))):
        if trial.trial_id not in top:
            for column, part in zip(others, (steps + [None], rounded(values) + [None], [trial.trial_id] * len(steps) + [None])):
                column.extend(part)
            continue
        traces.append(go.Scatter(
            x=steps, y=rounded(values), customdata=[trial.trial_id] * len(steps), mode=mode, name=trial.trial_id,
            legendgroup=trial.trial_id, showlegend=trial.trial_id not in shown, hovertemplate=hover,
            line=dict(color=color[trial.trial_id], width=2), marker=dict(size=5)))
        shown.add(trial.trial_id)
    if others[0]:
        # a marker per grey point costs an SVG element each: above MARKED_POINTS, the rest are lines
        traces.insert(0, go.Scatter(
            x=others[0], y=others[1], customdata=others[2], name="other trials",
            mode="lines" if len(others[0]) > MARKED_POINTS else mode, legendgroup="others",
            showlegend="others" not in shown, hovertemplate=hover, line=dict(color=OTHER, width=1), marker=dict(size=3)))
        shown.add("others")
    return traces


def curves_figure(exp: Experiment, keys: list[str], top: list[str], title: str, mode: str = "lines") -> go.Figure | None:
    """Training curves of every trial on shared axes, one panel per reported value."""
    keys = [k for k in keys if any(t.curve(k)[0] for t in exp.trials)]
    if not keys:
        return None
    cols = min(2, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=keys, horizontal_spacing=0.08,
                        vertical_spacing=min(0.2, 0.45 / rows))
    # the best K keep at least 50 points a curve; the grey rest share what the page allows (at
    # least 8 each), which keeps the page of a 1000-trial sweep quick to draw
    share = POINTS_PER_PAGE // max(1, len(exp.trials) * len(keys))
    caps = {True: max(50, min(1000, share)), False: max(8, min(1000, share))}
    color = colors(exp, top)
    shown: set = set()
    for i, key in enumerate(keys):
        row, col = i // cols + 1, i % cols + 1
        curves = [(t, *decimate(*t.curve(key), caps[t.trial_id in top])) for t in exp.trials]
        for trace in trial_traces([c for c in curves if c[1]], top, color, key, mode, shown):
            fig.add_trace(trace, row=row, col=col)
        fig.update_xaxes(title_text="step" if row == rows else None, row=row, col=col)
    fig.update_layout(title=title, height=max(360, 320 * rows), margin=MARGIN, hovermode="closest",
                      legend=dict(title="best first"))
    return fig


def marker_trace(points: list[tuple[Trial, int, float]], label: str, hover: str, **marker) -> go.Scatter:
    return go.Scatter(x=[p[1] for p in points], y=rounded([p[2] for p in points]), customdata=[p[0].trial_id for p in points],
                      mode="markers", name=label, marker=marker, hovertemplate=hover)


def objective_figure(exp: Experiment, top: list[str], statuses: dict[str, str]) -> go.Figure | None:
    """The objective over training per trial; where the scheduler stopped a trial, where one
    errored, and where each trial's best kept checkpoint was taken."""
    key = exp.objective
    color = colors(exp, top)
    curves = [(t, *t.curve(key)) for t in exp.trials]
    curves = [c for c in curves if c[1]]
    if not curves:
        return None
    fig = go.Figure(trial_traces(curves, top, color, key, "lines+markers"))
    ends = {"stopped early": ("x", "stopped by the scheduler"), "errored": ("x-thin-open", "errored"),
            "interrupted": ("hourglass", "interrupted")}
    for status, (symbol, label) in ends.items():
        points = [(t, t.last_step, values[-1]) for t, _, values in curves if statuses.get(t.trial_id) == status]
        if points:
            fig.add_trace(marker_trace(points, label, f"trial %{{customdata}} {status} at step %{{x}}<extra></extra>",
                                       symbol=symbol, size=11, color="#c62828", line=dict(width=2, color="#c62828")))
    untrained = [(t, 0, float(r[key])) for t in exp.trials for r in [exp.untrained_of(t)] if r and key in r
                 and isinstance(r[key], (int, float)) and math.isfinite(r[key])]
    if untrained:  # a reference the training should beat, never a result
        fig.add_trace(marker_trace(untrained, "untrained (reference)",
                                   f"trial %{{customdata}}: the untrained model, {key} %{{y:.4g}} (a reference)<extra></extra>",
                                   symbol="circle-open", size=10, color="#555", line=dict(width=1.5, color="#555")))
    best_ckpt = exp.best_checkpoints()
    points = [(t, c.step, float(c.metrics[key])) for t, c in ((t, best_ckpt.get(t.trial_id)) for t in exp.trials) if c]
    if points:
        fig.add_trace(marker_trace(
            points, "best checkpoint", f"trial %{{customdata}}: best checkpoint at step %{{x}}, {key} %{{y:.4g}}<extra></extra>",
            symbol="star", size=[13 if t.trial_id in top else 9 for t, _, _ in points],
            color=[color[t.trial_id] if t.trial_id in top else "#777" for t, _, _ in points], line=dict(width=1, color="#222")))
    log = spans_decades([v for _, _, values in curves for v in values])
    fig.update_layout(title=f"{key} over training ({exp.mode} is better; step 0 = the untrained model, a reference)",
                      xaxis_title="step", yaxis_title=key, yaxis_type="log" if log else "linear", height=440,
                      margin=MARGIN, hovermode="closest", updatemenus=log_buttons())
    fig.layout.updatemenus[0].active = 1 if log else 0
    return fig


def param_values(exp: Experiment, key: str, trials: list[Trial]) -> tuple[list, dict | None]:
    """A hyperparameter's values for plotting: numbers as they are, anything else as category codes."""
    values = [exp.params_at_best(t).get(key) for t in trials]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return values, None
    names = sorted({json.dumps(v) for v in values})
    return [names.index(json.dumps(v)) for v in values], {"tickvals": list(range(len(names))),
                                                         "ticktext": [n.strip('"') for n in names]}


def scored_trials(exp: Experiment) -> list[tuple[Trial, float]]:
    out = []
    for trial in exp.trials:
        best = exp.best_of(trial)
        if best:
            out.append((trial, float(best[exp.objective])))
    return out


def parallel_figure(exp: Experiment, top: list[str]) -> go.Figure | None:
    """Parallel coordinates drawn as SVG lines: one axis per searched hyperparameter (log10 for
    log-distributed ones, categories spread evenly) and the best objective, one line per trial
    colored by it. (Plotly's own parcoords needs WebGL: seconds to start in a software renderer,
    and a page of several sweeps runs out of WebGL contexts.)"""
    scored = scored_trials(exp)
    keys = exp.searched
    if len(scored) < 2 or not keys:
        return None
    trials = [t for t, _ in scored]
    axes = []  # (label, positions in [0, 1] per trial, the text shown for each trial, tick labels)
    for key in keys:
        values, ticks = param_values(exp, key, trials)
        if ticks:
            last = max(1, len(ticks["tickvals"]) - 1)
            axes.append((key, [v / last for v in values], [ticks["ticktext"][v] for v in values],
                         [(i / last, text) for i, text in enumerate(ticks["ticktext"])]))
            continue
        log = is_log(exp.spec, key) and min(values) > 0
        scaled = [math.log10(v) for v in values] if log else list(values)
        low, high = min(scaled), max(scaled)
        span = (high - low) or 1.0
        axes.append((f"{key} (log)" if log else key, [(v - low) / span for v in scaled], [f"{v:.4g}" for v in values],
                     [(0.0, f"{min(values):.3g}"), (1.0, f"{max(values):.3g}")]))
    objective = [v for _, v in scored]
    low, high = min(objective), max(objective)
    span = (high - low) or 1.0
    better = [(high - v) / span if exp.mode == "min" else (v - low) / span for v in objective]  # 1 = the best
    axes.append((f"best {exp.objective}", [(v - low) / span for v in objective], [f"{v:.4g}" for v in objective],
                 [(0.0, f"{low:.4g}"), (1.0, f"{high:.4g}")]))
    fig = go.Figure()
    x = list(range(len(axes)))
    for i in sorted(range(len(trials)), key=lambda i: better[i]):  # the best drawn last, on top
        trial = trials[i]
        fig.add_trace(go.Scatter(
            x=x, y=rounded([a[1][i] for a in axes], 4), customdata=[trial.trial_id] * len(x), mode="lines",
            text=[f"{a[0]} {a[2][i]}" for a in axes], showlegend=False,
            line=dict(color=sample_colorscale("Viridis", better[i])[0], width=3 if trial.trial_id in top else 1.2),
            hovertemplate="trial %{customdata}<br>%{text}<extra></extra>"))
    # the colorbar: an invisible marker trace
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip", marker=dict(
        color=[low, high], cmin=low, cmax=high, colorscale="Viridis", reversescale=exp.mode == "min", showscale=True,
        colorbar=dict(title=exp.objective, thickness=14))))
    for j, (_, _, _, ticks) in enumerate(axes):
        fig.add_vline(x=j, line=dict(color="#444", width=1))
        for y, text in ticks:
            fig.add_annotation(x=j, y=y, text=text, showarrow=False, xanchor="left", xshift=4, font=dict(size=10),
                               bgcolor="rgba(255,255,255,0.7)")
    fig.update_xaxes(tickvals=x, ticktext=[a[0] for a in axes], showgrid=False, zeroline=False, side="top",
                     range=[-0.2, len(axes) - 0.6])
    fig.update_yaxes(visible=False, range=[-0.05, 1.05])
    fig.update_layout(title=f"hyperparameters of each trial, colored by its best {exp.objective} "
                            f"(yellow = best; each axis spans the trials' values)",
                      height=420, margin=dict(l=30, r=20, t=100, b=20), hovermode="closest", plot_bgcolor="#fff")
    return fig


def scatter_figure(exp: Experiment, statuses: dict[str, str]) -> go.Figure | None:
    scored = scored_trials(exp)
    keys = exp.searched
    if not scored or not keys:
        return None
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=keys, shared_yaxes=True, vertical_spacing=0.3 / rows)
    trials = [t for t, _ in scored]
    objective = rounded([v for _, v in scored])
    status_color = {"finished": "#2e7d32", "stopped early": "#ef6c00", "errored": "#c62828", "running": "#1565c0",
                    "interrupted": "#6a1b9a"}
    marker_colors = [status_color.get(statuses.get(t.trial_id), "#555") for t in trials]
    for i, key in enumerate(keys):
        row, col = i // cols + 1, i % cols + 1
        values, ticks = param_values(exp, key, trials)
        fig.add_trace(go.Scatter(
            x=values, y=objective, mode="markers", showlegend=False, marker=dict(color=marker_colors, size=8),
            text=[f"trial {t.trial_id} ({statuses.get(t.trial_id)})" for t in trials],
            hovertemplate=f"%{{text}}<br>{key} %{{x}}<br>{exp.objective} %{{y:.4g}}<extra></extra>"), row=row, col=col)
        if ticks:
            fig.update_xaxes(tickmode="array", **ticks, row=row, col=col)
        elif is_log(exp.spec, key) and min(values) > 0:
            fig.update_xaxes(type="log", row=row, col=col)
    fig.update_yaxes(title_text=f"best {exp.objective}", col=1)
    fig.update_layout(title=f"best {exp.objective} against each hyperparameter (color: green finished, "
                            f"orange stopped early, red errored, blue running, purple interrupted)",
                      height=max(320, 280 * rows), margin=MARGIN)
    return fig


def _distributions(exp: Experiment, keys: list[str], trials: list[Trial]) -> dict:
    """Optuna distributions of the searched hyperparameters, from the space file, else from the values."""
    import optuna.distributions as od

    space = search_space(exp.spec)[0]
    out = {}
    for key in keys:
        table = space.get(key, {})
        kind = table.get("distribution")
        values = [exp.params_at_best(t).get(key) for t in trials]
        try:
            if kind in ("uniform", "loguniform"):
                out[key] = od.FloatDistribution(table["low"], table["high"], log=kind == "loguniform")
            elif kind in ("int", "logint"):
                out[key] = od.IntDistribution(table["low"], table["high"], log=kind == "logint")
            elif kind == "choice":
                out[key] = od.CategoricalDistribution(table["values"])
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                out[key] = od.IntDistribution(min(values), max(values))
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                out[key] = od.FloatDistribution(min(values), max(values))
            else:
                out[key] = od.CategoricalDistribution(sorted({json.dumps(v) for v in values}))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _study_from_db(exp: Experiment):
    """The sweep's persisted Optuna study, read from a copy (the sweep may be writing the file)."""
    import optuna

    db = exp.path / STUDY_FILE
    if not db.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / STUDY_FILE
        shutil.copyfile(db, copy)
        storage = optuna.storages.RDBStorage(f"sqlite:///{copy}")
        try:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            name = exp.spec.get("name") if exp.spec.get("name") in names else (names[0] if len(names) == 1 else None)
            if name is None:
                return None
            stored = optuna.load_study(study_name=name, storage=storage)
            study = optuna.create_study(direction=stored.direction)
            study.add_trials(stored.get_trials(deepcopy=True, states=(optuna.trial.TrialState.COMPLETE,)))
        finally:
            storage.engine.dispose()
    return study


def _study_from_results(exp: Experiment):
    """Tune's results loaded into an Optuna study: each trial's hyperparameters and best objective."""
    import optuna

    scored = scored_trials(exp)
    distributions = _distributions(exp, exp.searched, [t for t, _ in scored])
    study = optuna.create_study(direction="minimize" if exp.mode == "min" else "maximize")
    for trial, value in scored:
        params = {k: (t if not isinstance(d, optuna.distributions.CategoricalDistribution) or t in d.choices
                      else json.dumps(t)) for k, d in distributions.items() for t in [exp.params_at_best(trial).get(k)]}
        try:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
        except ValueError:
            continue  # a value outside the space (the file changed since): leave the trial out
    return study


def importance(exp: Experiment) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importance of each searched hyperparameter for the objective, and where the
    trials came from; ({}, why not) when there is too little to tell."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study, source = _study_from_db(exp), "the sweep's Optuna study (optuna.db)"
    except Exception as e:  # a damaged or newer-schema database: fall back to Tune's results
        study, source = None, f"Tune's results (optuna.db unreadable: {type(e).__name__})"
    if study is None or len(study.trials) < 2:
        study, source = _study_from_results(exp), source if "unreadable" in source else "Tune's results"
    if len(study.trials) < 2:
        return {}, "needs at least 2 trials with a finite objective"
    try:
        scores = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as e:
        return {}, f"not computable yet ({e})"
    return dict(scores), f"{len(study.trials)} completed trials from {source}"


def importance_figure(exp: Experiment) -> tuple[go.Figure | None, str]:
    scores, source = importance(exp)
    if not scores:
        return None, source
    keys = sorted(scores, key=scores.get)
    fig = go.Figure(go.Bar(x=rounded([scores[k] for k in keys], 3), y=keys, orientation="h", marker_color="#546e7a",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title=f"hyperparameter importance for {exp.objective} (Optuna fANOVA; {source})",
                      xaxis_title="share of the objective's variance", height=max(240, 60 + 40 * len(keys)),
                      margin=dict(l=120, r=20, t=60, b=45))
    return fig, source


def rescore_figure(exp: Experiment) -> go.Figure | None:
    """rescore.json's checkpoints in its order: the re-scored mean with its 95% interval over
    seeds, each seed's value, and the sweep's own single reading beside them."""
    entries = [e for e in exp.rescored_entries() if all(isinstance(e.get(k), (int, float)) for k in ("mean", "step"))]
    if not entries:
        return None
    labels = [f"{e.get('trial')} @ {e['step']}" for e in entries]
    low = [e["mean"] - e["ci95"][0] for e in entries]
    high = [e["ci95"][1] - e["mean"] for e in entries]
    fig = go.Figure(go.Scatter(x=labels, y=[e["mean"] for e in entries], mode="markers", name="re-scored mean, 95% interval",
                               marker=dict(size=11, color=PALETTE[0]),
                               error_y=dict(type="data", symmetric=False, array=rounded(high), arrayminus=rounded(low))))
    seeds = [(label, v) for label, e in zip(labels, entries) for v in e.get("values", []) if isinstance(v, (int, float))]
    fig.add_trace(go.Scatter(x=[x for x, _ in seeds], y=rounded([v for _, v in seeds]), mode="markers", name="each seed",
                             marker=dict(size=6, color=PALETTE[0], opacity=0.45)))
    fig.add_trace(go.Scatter(x=labels, y=rounded([e.get("sweep_value") for e in entries]), mode="markers",
                             name="the sweep's single reading", marker=dict(size=10, symbol="diamond-open", color=PALETTE[1])))
    better = "lower" if exp.mode == "min" else "higher"
    fig.update_layout(title=f"{exp.objective} of the best checkpoints re-scored ({better} is better)",
                      xaxis_title="trial @ step, re-scored order", yaxis_title=exp.objective, height=420,
                      margin=MARGIN)
    return fig


def pareto_figure(exp: Experiment) -> go.Figure | None:
    """A Pareto sweep's trials by cost and objective (each at its best checkpoint by the sweep's
    reading), the front through the ones no other beats on both, and its knee. The traces carry
    their trial ids as text, not customdata: the page's trial filter leaves this figure whole."""
    front = exp.pareto_front()
    if not front:
        return None
    cost, key = exp.cost, exp.objective
    on_front = {t.trial_id for t, _ in front}
    costed = exp.costed_checkpoints()
    hover = f"trial %{{text}}<br>{cost} %{{x:.4g}}<br>{key} %{{y:.4g}}<extra>%{{fullData.name}}</extra>"

    def points(pairs):
        return dict(x=rounded([float(c.metrics[cost]) for _, c in pairs]), y=rounded([float(c.metrics[key]) for _, c in pairs]),
                    text=[t.trial_id for t, _ in pairs], hovertemplate=hover)

    others = [(t, c) for t, c in costed if t.trial_id not in on_front]
    fig = go.Figure()
    if others:
        fig.add_trace(go.Scatter(mode="markers", name="other trials", marker=dict(size=8, color=OTHER), **points(others)))
    fig.add_trace(go.Scatter(mode="lines+markers", name="Pareto front", line=dict(shape="hv", color=PALETTE[0]),
                             marker=dict(size=10, color=PALETTE[0]), **points(front)))
    knee = front[exp.knee(front)]
    fig.add_trace(go.Scatter(mode="markers", name="knee", marker=dict(size=20, symbol="star", color=PALETTE[1],
                                                                       line=dict(width=1, color="#222")), **points([knee])))
    better = "lower" if exp.mode == "min" else "higher"
    fig.update_layout(title=f"{key} against {cost}: {len(front)} of {len(costed)} trials on the front ({better} {key} "
                            f"and lower {cost} are better)",
                      xaxis_title=cost, yaxis_title=key, height=440, margin=MARGIN, hovermode="closest",
                      xaxis_type="log" if spans_decades([float(c.metrics[cost]) for _, c in costed]) else "linear")
    return fig


def roc_figure(curves: list[tuple[str, dict]]) -> go.Figure | None:
    """ROC curves from checkpoints' evaluation.json: [(label, {"fpr", "tpr", "auroc"})]."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#999"), name="chance"))
    for i, (label, roc) in enumerate(curves):
        fpr, tpr = decimate(list(roc.get("fpr", [])), list(roc.get("tpr", [])), 500)
        if fpr:
            fig.add_trace(go.Scatter(x=rounded(fpr, 4), y=rounded(tpr, 4), mode="lines", name=label,
                                     line=dict(color=PALETTE[i % len(PALETTE)], width=2)))
    if len(fig.data) == 1:
        return None
    fig.update_layout(title="ROC of the best checkpoints on held-out data (normal class vs the rest)",
                      xaxis_title="false positive rate", yaxis_title="true positive rate", height=460, width=640,
                      margin=MARGIN, xaxis=dict(range=[0, 1]), yaxis=dict(range=[0, 1.01]),
                      legend=dict(x=0.98, y=0.02, xanchor="right", yanchor="bottom", bgcolor="rgba(255,255,255,0.8)"))
    return fig


def comparison_figures(experiments: list[Experiment]) -> list[go.Figure]:
    """Experiments with the same objective on shared axes: the objective over training of every
    trial (colored by experiment) and each trial's best objective."""
    figures = []
    by_objective: dict[tuple[str, str], list[Experiment]] = {}
    for exp in experiments:
        by_objective.setdefault((exp.objective, exp.mode), []).append(exp)
    for (objective, mode), group in by_objective.items():
        curves, best = go.Figure(), go.Figure()
        every = []
        for i, exp in enumerate(group):
            color = PALETTE[i % len(PALETTE)]
            label = f"{exp.spec.get('name')} ({exp.spec.get('model')})"
            for j, trial in enumerate(exp.ranked_trials()):
                steps, values = trial.curve(objective)
                if steps:
                    every += values
                    curves.add_trace(go.Scatter(
                        x=steps, y=rounded(values), mode="lines", name=label, legendgroup=label, showlegend=j == 0,
                        line=dict(color=color, width=2 if j == 0 else 1), opacity=1 if j == 0 else 0.45,
                        hovertemplate=f"{label} trial {trial.trial_id}<br>step %{{x}}<br>{objective} %{{y:.4g}}<extra></extra>"))
            scored = scored_trials(exp)
            best.add_trace(go.Box(y=rounded([v for _, v in scored]), name=label, boxpoints="all", jitter=0.4,
                                  marker_color=color, text=[f"trial {t.trial_id}" for t, _ in scored],
                                  hovertemplate=f"%{{text}}: {objective} %{{y:.4g}}<extra></extra>"))
        if not every:
            continue
        log = spans_decades(every)
        curves.update_layout(title=f"{objective} over training, every trial of each experiment (the best trial bold)",
                             xaxis_title="step", yaxis_title=objective, yaxis_type="log" if log else "linear",
                             height=440, margin=MARGIN, updatemenus=log_buttons())
        curves.layout.updatemenus[0].active = 1 if log else 0
        best.update_layout(title=f"best {objective} of each trial, by experiment ({mode} is better)",
                           yaxis_title=objective, height=400, margin=MARGIN, showlegend=False)
        figures += [curves, best]
    return figures
