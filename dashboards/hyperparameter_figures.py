"""The dashboard's figures of hyperparameters against the objective: parallel coordinates, one
scatter panel per searched hyperparameter, and Optuna's fANOVA importance (from the sweep's
optuna.db, else from Tune's results). Shared pieces are in dashboards.figures.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from dashboards.figures import MARGIN, is_log, rounded, scored_trials, search_space
from trainables.layout import STUDY_FILE
from trainables.trials import Experiment, Trial


def param_values(exp: Experiment, key: str, trials: list[Trial]) -> tuple[list, dict | None]:
    """A hyperparameter's values for plotting: numbers as they are, anything else as category codes."""
    values = [exp.params_at_best(t).get(key) for t in trials]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return values, None
    names = sorted({json.dumps(v) for v in values})
    return [names.index(json.dumps(v)) for v in values], {"tickvals": list(range(len(names))),
                                                         "ticktext": [n.strip('"') for n in names]}


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
