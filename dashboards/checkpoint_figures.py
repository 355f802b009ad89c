"""The dashboard's figures of the best checkpoints: their re-scored readings (rescore.json), a
Pareto sweep's front with its knee, and the ROC curves of anomaly detectors. Shared pieces are in
dashboards.figures.
"""

from __future__ import annotations

import plotly.graph_objects as go

from dashboards.figures import MARGIN, OTHER, PALETTE, decimate, rounded, spans_decades
from trainables.trials import Experiment


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
