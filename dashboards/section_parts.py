"""The parts of an experiment's section of the dashboard, each as HTML: the facts header (with the
search space and the feature space's check), the leaderboard, the re-scored winners, the Pareto
front's cards, the sample grids and the anomaly curves. dashboards.build puts them together.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections import Counter

from dashboards import checkpoint_figures, figures
from dashboards.page import esc, facts, image_figure, plot_div
from trainables.layout import EVALUATION, SAMPLES, STUDY_FILE
from trainables.trials import STATUSES, Experiment


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m {seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m {seconds % 60:02d}s"


def fmt(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.4g}"
    return esc(value)


ROLES = {"defaults": "the family's default hyperparameters, tried first: this sweep's baseline",
         "final": "the final phase: a top configuration trained on from its best checkpoint",
         "front": "on the Pareto front: no other trial is better on both objectives",
         "knee": "the Pareto front's knee: its point nearest the best objective at the least cost"}


def leaderboard_html(exp: Experiment, statuses: dict[str, str], top: list[str]) -> str:
    best_ckpt = exp.best_checkpoints()
    roles = exp.roles()
    keys = exp.searched or sorted({k for t in exp.trials for k in exp.params_at_best(t)})
    costs = [exp.cost] if exp.cost else []
    on_front = exp.pareto_places()
    head = ["#", "trial", *keys, f"best {exp.objective}", *costs, "at step", "status", "steps run", "wall time",
            "best checkpoint"]
    rows = []
    for rank, trial in enumerate(exp.ranked_trials(), start=1):
        best = exp.best_of(trial) or {}
        status = statuses[trial.trial_id]
        title = esc(trial.error) if trial.error else esc(STATUSES.get(status, ""))
        ckpt = best_ckpt.get(trial.trial_id)
        where = ""
        if ckpt:
            rel = ckpt.path.relative_to(exp.path) if ckpt.path.is_relative_to(exp.path) else ckpt.path
            where = f'<code title="{esc(ckpt.path)}">{esc(rel)}</code>'
        marks = [r for r in (roles.get(trial.trial_id), on_front.get(trial.trial_id)) if r]
        title = "; ".join(ROLES.get(r.split()[0], "") for r in marks)
        mark = f'<br><small title="{esc(title)}">{esc(", ".join(marks))}</small>' if marks else ""
        cells = [f'<td class="num">{rank}</td>', f"<td>{esc(trial.trial_id)}{mark}</td>",
                 *[f'<td class="num">{fmt(exp.params_at_best(trial).get(k, ""))}</td>' for k in keys],
                 f'<td class="num"><b>{fmt(best.get(exp.objective, math.nan))}</b></td>',
                 *[f'<td class="num">{fmt(best.get(k, math.nan))}</td>' for k in costs],
                 f'<td class="num">{fmt(best.get("step", ""))}</td>',
                 f'<td><span class="st st-{status.replace(" ", "-")}" title="{title}">{esc(status)}</span>'
                 f'{"<br><small>" + esc(trial.error[:160]) + "</small>" if trial.error else ""}</td>',
                 f'<td class="num">{trial.last_step}</td>', f'<td class="num">{duration(trial.wall_seconds)}</td>',
                 f"<td>{where}</td>"]
        css = "top" if trial.trial_id in top else ""
        rows.append(f'<tr class="{css}" data-trial="{esc(trial.trial_id)}">{"".join(cells)}</tr>')
    if not rows:
        return "<p>no trials yet</p>"
    return (f'<div class="board-wrap"><table class="board"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            f'<p class="note">Click a row to show only that trial in the figures below (click again for all). '
            f'Status: {"; ".join(f"<i>{esc(k)}</i>: {esc(v)}" for k, v in STATUSES.items())}.</p>')


def space_html(spec: dict) -> str:
    searched, fixed = figures.search_space(spec)
    rows = []
    for key, table in searched.items():
        kind = table.get("distribution", "?")
        what = f"one of {table.get('values')}" if kind == "choice" else f"[{table.get('low')}, {table.get('high')}]"
        rows.append(f"<tr><td>{esc(key)}</td><td>{esc(kind)}</td><td>{esc(what)}</td></tr>")
    for key, value in fixed.items():
        rows.append(f"<tr><td>{esc(key)}</td><td>fixed</td><td>{esc(value)}</td></tr>")
    source = esc(spec.get("space_file") or "")
    return (f"<table><tr><th>hyperparameter</th><th>distribution</th><th>range</th></tr>{''.join(rows)}</table>"
            f'<div class="note">from <code>{source}</code>; every other hyperparameter keeps the family\'s default</div>')


def feature_check_html(check) -> str:
    """The feature space's check before the sweep (trainables.feature_checks.quick_check), in a sentence."""
    if not isinstance(check, dict) or not isinstance(check.get("sequences"), dict):
        return ""
    readings = "; ".join(f"{esc(k)} {esc(', '.join(f'{v:.3g}' for v in vs if isinstance(v, (int, float))))}"
                         for k, vs in check["sequences"].items() if isinstance(vs, list))
    verdict = "passed" if check.get("passed") else "<b>failed</b>"
    if isinstance(check.get("instead_of"), list) and check["instead_of"]:
        verdict += f" (used instead of {esc(', '.join(map(str, check['instead_of'])))}, which failed theirs)"
    floor = check.get("floor")
    return (f". Its check before the sweep {verdict}: FID of another real split {esc(f'{floor:.3g}' if isinstance(floor, (int, float)) else floor)} "
            f"(the floor), rising with each level of {readings} ({esc(check.get('images'))} images, "
            f"{esc(check.get('seconds'))} s)")


def warm_start_html(warm: dict) -> str:
    """A warm-started sweep (--warm-start): the sweeps whose trials seeded its Optuna study."""
    if not isinstance(warm.get("from"), list) or not warm["from"]:
        return ""
    dropped = warm.get("dropped") or 0
    return (f"; warm-started: {esc(warm.get('seeded'))} scored trials of "
            + ", ".join(f"<code>{esc(uri)}</code>" for uri in warm["from"]) + " seeded its Optuna study"
            + (f" ({esc(dropped)} dropped: a hyperparameter outside this sweep's space)" if dropped else "")
            + " and don't count in its trials")


def header_html(exp: Experiment, labels: dict, statuses: dict[str, str], logged: list[str],
                evaluated: list[str]) -> str:
    spec = exp.spec
    info = spec.get("dataset_info") or {}
    feature = spec.get("feature_network") or {}
    name = str(feature.get("name", "?"))
    sizes = info.get("sizes") if isinstance(info.get("sizes"), dict) else {}
    held_out = sizes.get("val") or sizes.get("test")  # what trials are scored against: val/ where there is one
    scored = spec.get("eval_samples")
    if isinstance(held_out, int) and isinstance(scored, int):
        scored = min(scored, held_out)
    if feature.get("arch"):  # the user's own weights file
        features = (f"<code>{esc(name)}</code>: the {esc(feature.get('feature_dim'))}-d pooled features (layer "
                    f"<code>{esc(feature.get('layer'))}</code>) of a torchvision {esc(feature['arch'])} with the weights "
                    f"of <code>{esc(feature.get('file'))}</code>; {esc(scored)} generated vs held-out "
                    f"real images per evaluation")
    elif name.startswith("inception"):
        features = (f"Inception-v3 pool features ({feature.get('feature_dim', 2048)}-d), as in published FID; "
                    f"{esc(scored)} generated vs held-out real images per evaluation")
    else:
        made = {"simclr": "a small CNN trained by contrastive self-supervision (SimCLR) on the dataset's own images",
                "random": "a small randomly initialised CNN"}.get(
            feature.get("kind"), f"a small classifier trained on the dataset (held-out accuracy {esc(feature.get('test_accuracy'))})")
        features = (f"<code>{esc(name)}</code>: the {esc(feature.get('feature_dim'))}-d penultimate layer of {made}; "
                    f"{esc(scored)} generated vs held-out real images per evaluation. "
                    f"Comparable between trials on this dataset, <b>not</b> with published Inception FID"
                    + feature_check_html(feature.get("check")))
    names = list(dict.fromkeys([exp.objective, *(labels.get("metric_names") or evaluated),
                                *(labels.get("loss_names") or logged)]))
    # the family's own words: recorded in sweep.json, or from the family itself for older sweeps
    descriptions = spec.get("metric_descriptions") or labels.get("metric_descriptions") or {}
    metrics = "".join(f"<li><code>{esc(k)}</code>: {esc(descriptions.get(k, 'reported by the family'))}</li>"
                      for k in names)
    counts = Counter(statuses.values())
    trial_text = (f"{len(exp.trials)} of {spec.get('trials')} started: "
                  + ", ".join(f"{n} {s}" for s, n in counts.most_common()) if exp.trials else "none started yet")
    scheduler = {"asha": "ASHA (asynchronous successive halving: stops trials whose objective trails at a rung)",
                 "fifo": "FIFO (every trial runs to the last step)",
                 "pbt": "Population Based Training (exploits the best trials' checkpoints, mutates learning rates)"}
    resources = spec.get("resources") or {}
    wall = exp.tune_state.get("_total_time")
    source = exp.source.uri  # s3://... for a remote experiment
    root, storage_name = source.rsplit("/", 1)
    path = shlex.quote(source)
    exported = shlex.quote(f"best/{storage_name}") if exp.remote else f"{path}/best"  # orchestrator.best's default
    ranked = exp.ranked_checkpoints()
    best_line = ""
    if ranked:
        trial, ckpt = ranked[0]
        best_line = (f"best: <b>{fmt(float(ckpt.metrics[exp.objective]))}</b> {esc(exp.objective)}, trial "
                     f"{esc(trial.trial_id)} at step {ckpt.step} (<code>{esc(ckpt.path)}</code>)")
    commands = [
        ("export the best checkpoints", f"python -m orchestrator.best {path} --top 3"),
        ("use the best one",
         f"python -m orchestrator.infer {exported}/rank1-* {first_mode(exp, labels)} --out out.png"),
        ("resume the sweep", f"python -m orchestrator.sweep {shlex.quote(str(spec.get('model')))} --resume "
                             f"--name {shlex.quote(storage_name)} --storage {shlex.quote(str(root))}"),
        ("rebuild this page", f"python -m dashboards.build {path}"),
    ]
    if exp.cost:
        commands.insert(1, ("export the Pareto front", f"python -m orchestrator.best {path} --pareto"))
    if (exp.path / STUDY_FILE).is_file():
        commands.append(("Optuna dashboard", f"optuna-dashboard sqlite:///{exp.path}/optuna.db"))
    commands.append(("TensorBoard", f"tensorboard --logdir {shlex.quote(str(exp.path))}"))
    rows = [
        ("model family", f"<b>{esc(spec.get('model'))}</b>" + (f": {esc(labels['description'])}" if labels.get("description") else "")),
        ("dataset", f"<b>{esc(spec.get('dataset'))}</b>, images {esc('x'.join(map(str, info.get('shape') or [])))}"
                    + (f", source domain {esc('x'.join(map(str, info['shape_a'])))}" if info.get("shape_a") else "")
                    + (f", subset of {esc(spec['subset'])} training images" if spec.get("subset") else "")
                    + "".join(f", {esc(k)} {esc(v)}" for k, v in (spec.get("data_options") or {}).items())
                    + (f" (from {esc(info.get('source'))})" if info.get("source") else "")
                    + (f"; split {esc(info['split'])}" if info.get("split") else "")
                    + (f": {esc(', '.join(f'{n} {k}' for k, n in info['sizes'].items() if n is not None))} images"
                       if info.get("sizes") else "")),
        ("objective", f"<b>{esc(exp.objective)}</b> ({'lower' if exp.mode == 'min' else 'higher'} is better), "
                      f"evaluated every {esc(spec.get('eval_every'))} steps; {best_line}"),
        ("metrics", f"<ul style='margin:0;padding-left:1.2em'>{metrics}</ul>"),
        ("FID/KID features", features),
        ("search space", space_html(spec)),
        ("scheduler", esc(scheduler.get(spec.get("scheduler"), spec.get("scheduler")))),
        ("trials", esc(trial_text) + warm_start_html(exp.warm_start)),
        ("budget", f"up to {esc(spec.get('max_steps'))} steps per trial, losses every {esc(spec.get('log_every'))} "
                   f"steps, {esc(spec.get('keep_checkpoints'))} best checkpoints kept per trial, seed {esc(spec.get('seed'))}"),
        ("compute", f"{duration(exp.compute_seconds)} of trial time in all"
                    + (f"; sweep wall clock {duration(wall)}" if isinstance(wall, (int, float)) and math.isfinite(wall) else "")
                    + f"; per trial {esc(resources.get('workers_per_trial', 1))} worker(s) x "
                      f"{esc(resources.get('cpus_per_worker', 1))} CPU, {esc(resources.get('gpus_per_worker', 0))} GPU"),
        ("created", f"{esc(spec.get('created', '?'))}; page built {time.strftime('%Y-%m-%d %H:%M:%S')} from "
                    f"<code>{esc(source)}</code>"),
        ("commands", "<pre>" + "\n".join(f"# {esc(what)}\n{esc(cmd)}" for what, cmd in commands) + "</pre>"),
    ]
    return facts(rows)


def data_kind(exp: Experiment, labels: dict) -> str:
    """images, paired or unpaired: the family's word when it is loaded, else what the dataset says."""
    info = exp.spec.get("dataset_info") or {}
    return labels.get("data_kind") or ("paired" if info.get("paired") else "unpaired" if info.get("shape_a") else "images")


def first_mode(exp: Experiment, labels: dict) -> str:
    if labels.get("inference_modes"):
        return labels["inference_modes"][0]
    return "score" if exp.objective == "auroc" else "sample" if data_kind(exp, labels) == "images" else "translate"


def checkpoint_caption(exp: Experiment, rank: int | None, trial_id: str, ckpt) -> str:
    prefix = f"#{rank} " if rank else ""
    return f"{prefix}trial {trial_id}, step {ckpt.step}: {exp.objective} {fmt(float(ckpt.metrics[exp.objective]))}"


def samples_html(exp: Experiment, labels: dict, top_k: int) -> str:
    kind = data_kind(exp, labels)
    anomaly = exp.objective == "auroc"
    if anomaly:
        note = "top row: the most anomalous held-out images by the checkpoint's score; bottom row: the least anomalous"
    elif kind == "paired":
        note = "each row: input sketch -> output -> (target, where the family shows it)"
    elif kind == "unpaired":
        note = "rows: input -> translated -> translated back (cycle), as the family arranges them"
    else:
        note = "generated from the same fixed latent draws at every evaluation"
    ranked = exp.ranked_checkpoints()
    best = "".join(image_figure(ckpt.path / SAMPLES, checkpoint_caption(exp, i + 1, trial.trial_id, ckpt), anomaly)
                   for i, (trial, ckpt) in enumerate(ranked[:top_k]))
    parts = [f"<h2>Samples of the best {top_k} checkpoints</h2><p class='note'>{esc(note)}.</p>",
             f"<div class='grids'>{best or '<p>no checkpoint yet</p>'}</div>"]
    if ranked:
        trial = ranked[0][0]
        over_time = "".join(image_figure(c.path / SAMPLES, checkpoint_caption(exp, None, trial.trial_id, c), anomaly)
                            for c in trial.checkpoints)
        parts.append(f"<h3>The best trial ({esc(trial.trial_id)}) over training: its kept checkpoints</h3>"
                     f"<div class='grids'>{over_time}</div>")
    return "".join(parts)


def anomaly_html(exp: Experiment, top_k: int, div: str) -> str:
    """vae_anomaly-style evaluations: ROC curves and the most / least anomalous held-out images."""
    curves, detail = [], ""
    for i, (trial, ckpt) in enumerate(exp.ranked_checkpoints()[:top_k]):
        try:
            evaluation = json.loads((ckpt.path / EVALUATION).read_text())
        except (OSError, ValueError):
            continue
        roc = evaluation.get("roc") or {}
        curves.append((f"#{i + 1} trial {trial.trial_id} step {ckpt.step} (AUROC {fmt(float(roc.get('auroc', math.nan)))})", roc))
        if not detail:
            def listing(items):
                return ", ".join(f"{esc(x.get('label'))} ({fmt(float(x.get('score', math.nan)))})" for x in items or [])
            detail = (f"<p class='note'>Best checkpoint, normal class <b>{esc(evaluation.get('normal_class'))}</b>. "
                      f"Most anomalous (label, score): {listing(evaluation.get('most_anomalous'))}. "
                      f"Least anomalous: {listing(evaluation.get('least_anomalous'))}.</p>")
    fig = checkpoint_figures.roc_figure(curves)
    if fig is None:
        return ""
    return "<h2>Anomaly detection</h2>" + plot_div(fig, div) + detail


RESCORE_COLUMNS = {"precision": "improved precision: share of samples inside the real images' k-NN manifold",
                   "recall": "improved recall: share of real images inside the samples' k-NN manifold (low: mode collapse)",
                   "density": "how many real neighbourhoods hold each sample, on average (1 for matching distributions)",
                   "coverage": "share of real images with a sample inside their neighbourhood",
                   "memorized_share": "share of samples nearer a training image than 99% of held-out images are "
                                      "(about 0.01 when nothing is copied)"}


def rescore_html(exp: Experiment, div: str) -> str:
    """rescore.json as a table with its figure; rows whose place differs from the sweep's ranking are marked."""
    entries = exp.rescored_entries()
    if not entries:
        return ""
    extra = [k for k in RESCORE_COLUMNS if any(k in e for e in entries)]
    head = ["#", "trial", "step", f"{exp.objective} mean", "95% interval", "per seed", "sweep reading", "sweep rank",
            *extra]
    rows = []
    for rank, e in enumerate(entries, start=1):
        moved = e.get("sweep_rank") != rank
        interval = e.get("ci95") if isinstance(e.get("ci95"), list) and len(e["ci95"]) == 2 else [math.nan, math.nan]
        cells = [f'<td class="num">{rank}</td>', f"<td>{esc(e.get('trial'))}</td>", f'<td class="num">{fmt(e.get("step"))}</td>',
                 f'<td class="num"><b>{fmt(e.get("mean"))}</b></td>',
                 f'<td class="num">{fmt(interval[0])} – {fmt(interval[1])}</td>',
                 f'<td class="num">{", ".join(fmt(v) for v in e.get("values", []))}</td>',
                 f'<td class="num">{fmt(e.get("sweep_value"))}</td>',
                 f'<td class="num">{fmt(e.get("sweep_rank"))}{" <b class=moved>&#8645;</b>" if moved else ""}</td>',
                 *[f'<td class="num">{fmt(e.get(k, math.nan))}</td>' for k in extra]]
        rows.append(f'<tr class="{"moved" if moved else ""}" data-trial="{esc(e.get("trial"))}">{"".join(cells)}</tr>')
    titles = {**RESCORE_COLUMNS, "sweep rank": "the checkpoint's place by the sweep's single reading"}
    header = "".join(f'<th title="{esc(titles.get(h, ""))}">{esc(h)}</th>' for h in head)
    moved = sum(e.get("sweep_rank") != rank for rank, e in enumerate(entries, start=1))
    r = exp.rescore
    note = (f"{len(r.get('seeds', []))} sample seeds x {r.get('samples')} held-out images each, "
            f"{esc(r.get('feature_network'))} features, {esc(r.get('created', ''))}. "
            + (f"{moved} of {len(entries)} checkpoints changed place against the sweep's ranking (&#8645;). "
               if moved else "The sweep's ranking held. ")
            + "orchestrator.best exports in this order.")
    figure = checkpoint_figures.rescore_figure(exp)
    return ("<h2>Re-scored winners</h2>"
            f'<div class="board-wrap"><table class="board rescore"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div><p class="note">{note}</p>'
            + (plot_div(figure, div) if figure else ""))


def pareto_html(exp: Experiment, div: str) -> str:
    """A Pareto sweep's front: the figure, then each point's sample grid and hyperparameters."""
    figure = checkpoint_figures.pareto_figure(exp)
    if figure is None:
        return ""
    front = exp.pareto_front()
    knee = exp.knee(front)
    searched = exp.searched
    cards = []
    for i, (trial, ckpt) in enumerate(front):
        params = exp.params_at_best(trial)
        caption = (f"{'knee: ' if i == knee else ''}trial {trial.trial_id}, step {ckpt.step}: {exp.objective} "
                   f"{fmt(float(ckpt.metrics[exp.objective]))}, {exp.cost} {fmt(float(ckpt.metrics[exp.cost]))}; "
                   + ", ".join(f"{k} {fmt(params.get(k))}" for k in searched))
        cards.append(image_figure(ckpt.path / SAMPLES, caption))
    note = (f"Each trial at its best checkpoint by the sweep's reading. The knee (&#9733;) is the front's point nearest "
            f"the ideal one (the best {esc(exp.objective)} at the least {esc(exp.cost)}) with both axes scaled to the "
            f"front's range. Export the front: <code>python -m orchestrator.best {esc(exp.source)} --pareto</code>.")
    return (f"<h2>Pareto front: {esc(exp.objective)} against {esc(exp.cost)}</h2>" + plot_div(figure, div)
            + f"<p class='note'>{note}</p><div class='grids pareto'>{''.join(cards)}</div>")
