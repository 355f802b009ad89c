"""The dashboard's Plotly figures, each built from an Experiment (files only): the pieces they all
share (colors, rounding, decimation, the trials' traces, the sweep's search space), the figures of
values over training, and the comparison of several experiments. The figures of hyperparameters
are in dashboards.hyperparameter_figures, those of the best checkpoints in
dashboards.checkpoint_figures.

The best K trials get a trace each; every other trial shares one grey trace per panel (its
curves separated by gaps), so a 100-trial sweep draws tens of traces, not hundreds. Each point
carries its trial id in `customdata`, which is how the page's controls show one trial, the best
K or all. Values are rounded to 5 significant digits and long curves are decimated, which keeps
a page of a 100-trial sweep small.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from search_spaces import SpaceError, read_space
from trainables.trials import Experiment, Trial

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


def scored_trials(exp: Experiment) -> list[tuple[Trial, float]]:
    out = []
    for trial in exp.trials:
        best = exp.best_of(trial)
        if best:
            out.append((trial, float(best[exp.objective])))
    return out


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
