"""python -m dashboards.build EXPERIMENT_DIR [...] [--out FILE]: one self-contained dashboard.html.

Plotly's JavaScript and every image are inlined, so the page opens from disk with no network
and no server. It reads the experiment directory only, so it works on a copy pulled from remote
storage and while a sweep is still running.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from orchestrator.cli import Parser, run
from orchestrator.experiment import Experiment, leaderboard, load_experiment
from trainables.features import INCEPTION


def _image_tag(path: Path, caption: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _finite(values) -> list:
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]


def curves_figure(exp: Experiment, keys: list[str], title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=keys)
    for col, key in enumerate(keys, start=1):
        for trial in exp.trials:
            rows = [r for r in trial.results if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if rows:
                fig.add_trace(go.Scatter(x=[r["step"] for r in rows], y=[r[key] for r in rows], mode="lines+markers",
                                         name=trial.trial_id, legendgroup=trial.trial_id, showlegend=col == 1),
                              row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_layout(title=title, height=380, margin=dict(t=70, b=40))
    return fig


def objective_figure(exp: Experiment):
    import plotly.graph_objects as go

    best = [(t.trial_id, (exp.best_of(t) or {}).get(exp.objective)) for t in exp.trials]
    best = [(tid, v) for tid, v in best if v is not None]
    best.sort(key=lambda tv: tv[1], reverse=exp.mode == "max")
    fig = go.Figure(go.Bar(x=[tid for tid, _ in best], y=_finite([v for _, v in best])))
    fig.update_layout(title=f"best {exp.objective} per trial ({exp.mode} is better)", height=340,
                      xaxis_title="trial", yaxis_title=exp.objective)
    return fig


def experiment_section(exp: Experiment) -> tuple[str, list]:
    spec = exp.spec
    from trainables.family import get_family

    family = get_family(spec["model"])
    feature = spec.get("feature_network", {})
    figures = [curves_figure(exp, list(family.loss_names), "losses over training"),
               curves_figure(exp, [exp.objective], f"{exp.objective} over training (step 0 = untrained)"),
               objective_figure(exp)]
    table = leaderboard(exp)
    ranked = exp.ranked_checkpoints()
    grids = "".join(_image_tag(ckpt.path / "samples.png",
                               f"#{i + 1} trial {trial.trial_id} step {ckpt.step}: {exp.objective} "
                               f"{ckpt.metrics[exp.objective]:.4g}")
                    for i, (trial, ckpt) in enumerate(ranked[:4]))
    best_cmd = f"python -m orchestrator.best {exp.path}"
    if feature.get("name") == INCEPTION:
        features = (f"<p>FID/KID use Inception-v3 pool features (2048-d), on {spec['eval_samples']} generated vs "
                    f"held-out real images.</p>")
    else:
        features = (f"<p>FID/KID are measured in the feature space of <code>{html.escape(str(feature.get('name')))}</code> "
                    f"(the {feature.get('feature_dim')}-d penultimate layer of a small classifier trained on the dataset, "
                    f"test accuracy {feature.get('test_accuracy')}), on {spec['eval_samples']} generated vs held-out "
                    f"real images. They are not comparable with Inception FID.</p>")
    header = f"""
<h1>{html.escape(spec['name'])}</h1>
<p><b>{html.escape(spec['model'])}</b> on <b>{html.escape(spec['dataset'])}</b>
 ({len(exp.trials)} of {spec['trials']} trials, up to {spec['max_steps']} steps each, scheduler {spec['scheduler']},
 seed {spec['seed']}). Objective: <b>{exp.objective}</b> ({exp.mode}).</p>
{features}
<p>Export the best checkpoint: <code>{html.escape(best_cmd)}</code> &middot; resume:
 <code>python -m orchestrator.sweep {html.escape(spec['model'])} --name {html.escape(spec['name'])}
 --storage {html.escape(str(exp.path.parent))} --resume</code></p>
<h2>Leaderboard</h2>
{table.to_html(classes="board", float_format=lambda v: f"{v:.4g}", na_rep="") if len(table) else "<p>no trials yet</p>"}
<h2>Samples of the best checkpoints</h2><div class="grids">{grids or "<p>no checkpoint yet</p>"}</div>
"""
    return header, figures


def build(experiments: list[str | Path], out: str | Path | None = None) -> Path:
    loaded = [load_experiment(p) for p in experiments]
    out = Path(out) if out else loaded[0].path / "dashboard.html"
    parts, first = [], True
    for exp in loaded:
        header, figures = experiment_section(exp)
        parts.append(f"<section>{header}")
        for fig in figures:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=True if first else False))
            first = False
        parts.append("</section>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(loaded[0].spec['name'])} - sweep dashboard</title>
<style>body{{font-family:sans-serif;margin:1.5em;}} table.board{{border-collapse:collapse;font-size:13px}}
table.board td,table.board th{{border:1px solid #ccc;padding:2px 6px}} .grids{{display:flex;flex-wrap:wrap;gap:1em}}
figure img{{image-rendering:pixelated;width:280px}} figcaption{{font-size:12px;max-width:280px}}</style>
</head><body>{''.join(parts)}</body></html>"""
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m dashboards.build", description=__doc__)
    p.add_argument("experiments", nargs="+", help="experiment directories (STORAGE/NAME)")
    p.add_argument("--out", help="output file (default EXPERIMENT/dashboard.html of the first one)")
    args = p.parse_args(argv)
    print(build(args.experiments, args.out))
    return 0


if __name__ == "__main__":
    run(main)
