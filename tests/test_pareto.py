"""Pareto search (`--objectives OBJECTIVE,COST`): every family's cost metrics, the front and its
knee, a real 2-objective sweep with its study, leaderboard, `best --pareto` and the dashboard's
front drawn in a real headless Chromium."""

import json
import math

import optuna
import pytest
import torch

from conftest import assert_one_line_error, diverging_sweep, run_cli
from trainables.datasets import load_dataset
from trainables.experiment import leaderboard, load_experiment
from trainables.family import inference_cost
from trainables.layout import COST_METRICS
from trainables.features import Evaluator, get_feature_network
from trainables.models import all_families
from trainables.trials import non_dominated

SPACE = """
latent_dim = 16

[lr_g]
distribution = "loguniform"
low = 1e-4
high = 2e-3

[hidden]
distribution = "choice"
values = [32, 64, 128, 256]
"""


@pytest.mark.parametrize("name", sorted(all_families()))
def test_every_family_reports_what_its_inference_costs(name):
    family = all_families()[name]
    data = load_dataset("digits" if family.data_kind == "images" else "digits_edges")
    hp = dict(family.defaults)
    data = family.prepare_data(data, hp)
    torch.manual_seed(0)
    modules = family.build(hp, data.info())
    evaluator = Evaluator(data, 64, *get_feature_network(data, log=lambda _: None), torch.device("cpu"))
    cost = inference_cost(family, modules, hp, evaluator)
    assert set(cost) == set(COST_METRICS)
    network = family.inference_network(modules)
    assert cost["params"] == sum(p.numel() for p in network.parameters()) > 0
    total = sum(p.numel() for m in modules.values() for p in m.parameters())
    assert cost["params"] < total or name == "vae_anomaly"  # not a discriminator's, encoder's or EMA copy's
    assert math.isfinite(cost["sample_ms"]) and cost["sample_ms"] > 0


def test_ddpm_costs_more_per_image_with_more_denoising_steps_and_evaluates_with_them_at_zero():
    family = all_families()["ddpm"]
    data = load_dataset("digits")
    hp = {**family.defaults, "base_channels": 8}
    modules = family.build(hp, data.info())
    evaluator = Evaluator(data, 32, *get_feature_network(data, log=lambda _: None), torch.device("cpu"))
    few, many = (inference_cost(family, modules, {**hp, "sample_steps": s}, evaluator)["sample_ms"] for s in (2, 40))
    assert many > 5 * few, (few, many)
    zero = {**hp, "sample_steps": 3, "eval_sample_steps": 0}
    assert torch.equal(family.evaluate(modules, zero, evaluator, seed=5).images,
                       family.generate(modules, 16, zero, seed=5))  # eval_sample_share 0.5 of 32


def test_the_front_keeps_exactly_the_points_no_other_beats():
    points = [(1.0, 9.0), (2.0, 5.0), (3.0, 5.0), (4.0, 1.0), (4.0, 1.0), (5.0, 6.0), (0.5, 20.0)]
    assert non_dominated(points) == [0, 1, 3, 4, 6]
    assert non_dominated([]) == [] and non_dominated([(1.0, 1.0)]) == [0]


@pytest.fixture(scope="module")
def pareto_sweep(ray_address, tmp_path_factory):
    storage = tmp_path_factory.mktemp("pareto")
    (storage / "space.toml").write_text(SPACE)
    proc = run_cli("orchestrator.sweep", "gan", "--dataset", "digits", "--space", str(storage / "space.toml"),
                   "--objectives", "fid,params", "--trials", "5", "--max-steps", "40", "--eval-every", "20",
                   "--log-every", "10", "--eval-samples", "300", "--seed", "1", "--storage", str(storage),
                   "--name", "front", "--address", ray_address)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return storage / "front", proc.stdout


def test_a_two_objective_sweep_searches_and_reports_its_front(pareto_sweep):
    path, stdout = pareto_sweep
    assert "ASHA can't rank trials on two objectives" in stdout  # the default scheduler gave way to fifo
    exp = load_experiment(path)
    assert exp.spec["objectives"] == ["fid", "params"] and exp.spec["scheduler"] == "fifo"
    assert len(exp.trials) == 5 and all(t.last_step == 40 for t in exp.trials)

    study = optuna.load_study(study_name="front", storage=f"sqlite:///{path / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 5
    told = sorted(tuple(t.values) for t in complete)
    reported = sorted((t.results[-1]["fid_best"], t.results[-1]["params"]) for t in exp.trials)
    assert [v for pair in told for v in pair] == pytest.approx([v for pair in reported for v in pair])

    # the front, from each trial's best checkpoint, is the non-dominated set of (fid, params)
    points = {t.trial_id: (min(c.metrics["fid"] for c in t.checkpoints), t.checkpoints[0].metrics["params"])
              for t in exp.trials}
    expected = {ids for ids, k in zip(points, range(len(points))) if k in non_dominated(list(points.values()))}
    front = exp.pareto_front()
    assert {t.trial_id for t, _ in front} == expected
    costs = [c.metrics["params"] for _, c in front]
    assert costs == sorted(costs) and len({p for _, p in points.values()}) >= 2
    fids = [c.metrics["fid"] for _, c in front]
    assert all(a > b for a, b in zip(fids, fids[1:]))  # along a front, paying more buys a better score
    knee = exp.knee(front)
    table = leaderboard(exp)
    assert sorted(table["pareto"]) == sorted(["knee"] + ["front"] * (len(front) - 1) + [""] * (5 - len(front)))
    assert table.set_index("trial").loc[front[knee][0].trial_id, "pareto"] == "knee"
    assert f"Pareto front of fid vs params, cheapest first ({len(front)} of 5 trials)" in stdout
    assert "--pareto" in stdout


def test_best_pareto_exports_the_front_and_marks_the_knee(pareto_sweep, tmp_path):
    path, _ = pareto_sweep
    exp = load_experiment(path)
    front = exp.pareto_front()
    proc = run_cli("orchestrator.best", str(path), "--pareto", "--dst", str(tmp_path / "front"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "front" / "best.json").read_text())
    assert [c["trial"] for c in summary["checkpoints"]] == [t.trial_id for t, _ in front]
    assert [c["knee"] for c in summary["checkpoints"]].count(True) == 1
    assert summary["checkpoints"][exp.knee(front)]["knee"]
    for entry in summary["checkpoints"]:
        assert (tmp_path / "front" / entry["path"].rsplit("/", 1)[-1] / "model.safetensors").is_file()
        assert entry["params"] > 0
    assert "(knee)" in proc.stdout

    out = tmp_path / "sample.png"
    proc = run_cli("orchestrator.infer", summary["checkpoints"][0]["path"], "sample", "--n", "4", "--out", str(out))
    assert proc.returncode == 0 and out.is_file(), proc.stderr


def test_the_dashboard_draws_the_front_with_its_knee_and_samples(pareto_sweep, tmp_path):
    from dashboards.build import build
    from test_dashboard import _browser, _wait_drawn

    path, _ = pareto_sweep
    exp = load_experiment(path)
    front = exp.pareto_front()
    out = build([path], tmp_path / "page.html")
    driver = _browser()
    try:
        driver.get(out.as_uri())
        _wait_drawn(driver)
        figure = driver.execute_script("""var gd = document.getElementById('e0-pareto');
            return {drawn: gd.classList.contains('js-plotly-plot'),
                    traces: gd.data.map(function (t) { return {name: t.name, x: t.x, y: t.y, text: t.text}; }),
                    markers: gd.querySelectorAll('.scatterlayer .point').length};""")
        assert figure["drawn"], figure
        traces = {t["name"]: t for t in figure["traces"]}
        assert traces["Pareto front"]["text"] == [t.trial_id for t, _ in front]
        assert traces["knee"]["text"] == [front[exp.knee(front)][0].trial_id]
        others = traces.get("other trials", {"text": []})["text"]
        assert len(others) == 5 - len(front)
        assert figure["markers"] == 5 + 1  # every trial once, and the knee's star
        grids = driver.execute_script("""return Array.from(document.querySelectorAll('#e0 .grids.pareto img'))
                                         .map(function (i) { return i.naturalWidth; });""")
        assert len(grids) == len(front) and all(w > 0 for w in grids)
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()


def test_a_diverging_trial_is_pruned_and_the_pareto_sweep_goes_on(ray_address, tmp_path):
    # the diverged trial's last report must still carry the costs, or Tune would stop the whole
    # sweep for a missing metric
    proc = diverging_sweep(ray_address, tmp_path, "--objectives", "fid,sample_ms")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{tmp_path}/nan/optuna.db")
    states = {t.params["lr"]: (t.state, t.values) for t in study.trials}
    assert states[10.0] == (optuna.trial.TrialState.PRUNED, None), states
    state, values = states[0.002]
    assert state == optuna.trial.TrialState.COMPLETE and len(values) == 2 and values[1] > 0, states
    front = load_experiment(tmp_path / "nan").pareto_front()
    assert [t.params["lr"] for t, _ in front] == [0.002]


def test_pareto_search_refuses_what_it_cannot_do(tmp_path):
    def sweep(*args):
        return run_cli("orchestrator.sweep", "gan", "--dataset", "digits", "--storage", str(tmp_path), *args)

    assert_one_line_error(sweep("--objectives", "kid,params"), "--objectives takes fid,COST")
    assert_one_line_error(sweep("--objectives", "fid,wall_time"), "params, sample_ms")
    assert_one_line_error(sweep("--objectives", "fid"), "--objectives takes fid,COST")
    assert_one_line_error(sweep("--objectives", "fid,params", "--scheduler", "pbt"), "PBT doesn't use it")
    assert_one_line_error(sweep("--objectives", "fid,params", "--warm-start", str(tmp_path)), "--warm-start")
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_best_pareto_refuses_a_sweep_of_one_objective(tiny_experiment):
    path = tiny_experiment
    assert_one_line_error(run_cli("orchestrator.best", str(path), "--pareto"), "searched one objective", "--objectives")
    assert_one_line_error(run_cli("orchestrator.best", str(path), "--pareto", "--top", "2"), "leave out --top")
