"""Real sweeps on a real local Ray cluster, tiny budgets."""

import json
import math
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, run_cli, start_cli, sweep_spec
from orchestrator.best import export_best
from trainables.cli import UsageError
from trainables.errors import BadInput
from trainables.experiment import leaderboard, load_experiment
from trainables.models import get_family
from trainables.checkpoints import load_checkpoint
from trainables.datasets import load_dataset
from trainables.features import SampleQuality, build_feature_network, get_feature_network

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_sweep(ray_address, tmp_path_factory):
    storage = tmp_path_factory.mktemp("experiments")
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--trials", "2", "--max-steps", "120",
                   "--eval-every", "40", "--log-every", "20", "--scheduler", "fifo", "--storage", str(storage),
                   "--name", "digits", "--address", ray_address, "--seed", "1", "--keep-checkpoints", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return storage / "digits", proc


def test_sweep_writes_a_complete_experiment(digits_sweep):
    path, proc = digits_sweep
    assert "best checkpoint:" in proc.stdout and "dashboard:" in proc.stdout
    # our own lines only: none of Tune's boxed configuration, results folder or TensorBoard hint (issue 30 item 5)
    assert "Configuration for experiment" not in proc.stdout and "View detailed results here" not in proc.stdout
    assert "To visualize your results with TensorBoard" not in proc.stdout
    # between the lines as trials end, a status of the running trials at their step (not a terminal: plain lines)
    assert re.search(r"\[sweep\] \d done, \d running \([0-9a-f]{8} step \d+/120", proc.stdout), proc.stdout
    spec = json.loads((path / "sweep.json").read_text())
    assert spec["feature_network"]["name"] == "classifier-digits" and spec["objective"] == "fid"
    exp = load_experiment(path)
    assert len(exp.trials) == 2
    for trial in exp.trials:
        assert trial.status(spec["max_steps"]) == "finished"
        steps = [r["step"] for r in trial.results]
        assert steps == [0, 20, 40, 60, 80, 100, 120]
        # 3 evaluations with a checkpoint; the best 2 by FID are kept (the disk bound), and the latest
        fids = {r["step"]: r["fid"] for r in trial.results if r["step"] in (40, 80, 120)}
        kept = set(sorted(fids, key=fids.get)[:2]) | {120}
        assert sorted(c.step for c in trial.checkpoints) == sorted(kept)
        for ckpt in trial.checkpoints:
            names = {p.name for p in ckpt.path.iterdir()}
            assert {"model.safetensors", "config.json", "metrics.json", "samples.png", "training_state.pt"} <= names
            assert ckpt.metrics["fid"] == pytest.approx(ckpt.metrics["fid"]) and ckpt.metrics["fid"] > 0
    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{path}/optuna.db")
    assert len(study.trials) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # trial 1 trained the family's defaults (the DCGAN paper's): the sweep's own baseline, marked
    defaults = get_family("dcgan").defaults
    assert spec["baseline"] == {k: defaults[k] for k in ("lr_g", "lr_d", "beta1", "latent_dim", "batch_size", "diffaug")}
    assert study.trials[0].params == spec["baseline"]
    assert list(leaderboard(exp)["role"]).count("defaults") == 1
    page = (path / "dashboard.html").read_text()
    assert "data:image/png;base64," in page and "plotly" in page.lower()
    assert page.count(">defaults</small>") == 1
    assert list(path.glob("run_trial_*/events.out.tfevents.*"))  # TensorBoard can read the run


def test_best_checkpoint_beats_an_untrained_generator(digits_sweep, cache_dir):
    path, _ = digits_sweep
    exp = load_experiment(path)
    best_trial, best = exp.ranked_checkpoints()[0]
    model = load_checkpoint(best.path, "cpu")
    data = load_dataset("digits")
    quality = SampleQuality(build_feature_network(*get_feature_network(data)), data.test_x, torch.device("cpu"))
    trained = quality(model.sample(len(data.test_x), seed=3))["fid"]
    torch.manual_seed(0)
    untrained = {k: m.eval() for k, m in model.family.build(model.hp, data.info()).items()}
    baseline = quality(model.family.generate(untrained, len(data.test_x), model.hp, 3))["fid"]
    assert trained < 0.7 * baseline, (trained, baseline)
    # the loop measured the untrained model too: its first report (step 0), a reference that never
    # becomes the trial's best (fid_best, what Tune, Optuna and ASHA rank on), and the sweep checked
    # its feature space before Ray started
    first = best_trial.results[0]
    assert first["step"] == 0 and first["untrained"] == 1 and first["fid"] > best.metrics["fid"]
    assert first["fid_best"] == math.inf
    for trial in exp.trials:
        trained = [r["fid"] for r in trial.results if r["step"] > 0 and math.isfinite(r.get("fid", math.nan))]
        assert trial.results[-1]["fid_best"] == min(trained) == exp.best_of(trial)["fid"]
    assert exp.spec["feature_network"]["check"]["passed"]


def test_best_exports_and_infer_samples_a_grid(digits_sweep, tmp_path):
    path, _ = digits_sweep
    proc = run_cli("orchestrator.best", str(path), "--top", "2", "--dst", str(tmp_path / "best"))
    assert proc.returncode == 0, proc.stderr
    exported = sorted((tmp_path / "best").glob("rank*"))
    assert [p.name.split("-")[0] for p in exported] == ["rank1", "rank2"]
    summary = json.loads((tmp_path / "best" / "best.json").read_text())
    fids = [c["fid"] for c in summary["checkpoints"]]
    assert fids == sorted(fids)
    out = tmp_path / "grid.png"
    proc = run_cli("orchestrator.infer", str(exported[0]), "sample", "--n", "16", "--out", str(out), "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as image:
        assert image.size == (4 * 18 + 2, 4 * 18 + 2)  # 4x4 grid of 16px digits, 2px padding


def test_resume_of_a_finished_sweep_reruns_nothing(digits_sweep, ray_address):
    path, _ = digits_sweep
    before = {p: p.stat().st_size for p in path.glob("run_trial_*/result.json")}
    checkpoints = sorted(p.name for p in path.glob("checkpoints/*/checkpoint_*"))
    spec = json.loads((path / "sweep.json").read_text())
    assert spec["resources"] == {"workers_per_trial": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0,
                                 "torch_trainer": False}  # read back by --resume
    proc = run_cli("orchestrator.sweep", "dcgan", "--resume", "--name", "digits", "--storage", str(path.parent),
                   "--address", ray_address, "--no-dashboard", "--cpus-per-worker", "0.5")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resources changed from its sweep.json: --cpus-per-worker 1.0 -> 0.5" in proc.stdout
    assert json.loads((path / "sweep.json").read_text()) == spec  # written once
    assert {p: p.stat().st_size for p in path.glob("run_trial_*/result.json")} == before
    assert sorted(p.name for p in path.glob("checkpoints/*/checkpoint_*")) == checkpoints
    wrong_family = run_cli("orchestrator.sweep", "vae", "--resume", "--name", "digits", "--storage", str(path.parent))
    assert_one_line_error(wrong_family, "is a dcgan sweep, not vae")


def test_a_finished_sweep_is_extended_with_the_options_it_ran_with_and_its_study_goes_on(ray_address, tmp_path):
    """A finished sweep extended from 2 to 4 trials, then to 5: one study, the first trials untouched.
    How it runs (--rescore-top, --no-dashboard, --dashboard-every, --max-concurrent, --max-failures,
    --mlflow) is saved in sweep.json and reused by --resume unless given again; the first lines say
    which. (A --resume --trials 4 of a sweep made with --rescore-top 0 once re-scored the top 5 over
    10,000 images: 158 s of a 232 s command.) Also --searcher random: Optuna's RandomSampler instead
    of TPE (the baseline of bench/sweeps.py), said, kept in sweep.json and used again."""
    args = ["--storage", str(tmp_path), "--name", "ext", "--address", ray_address]

    def sweep(*more: str) -> subprocess.CompletedProcess:  # without the --rescore-top 0 that run_cli adds
        proc = run_cli("orchestrator.sweep", "vae", "--dataset", "digits", *args, *more, rescore=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    first = sweep("--trials", "2", "--max-steps", "20", "--eval-every", "10", "--eval-samples", "100", "--scheduler",
                  "fifo", "--seed", "1", "--searcher", "random", "--rescore-top", "0", "--no-dashboard",
                  "--dashboard-every", "5", "--max-concurrent", "1", "--max-failures", "2")
    assert "Optuna sampler random" in first.stdout
    path = tmp_path / "ext"
    spec = json.loads((path / "sweep.json").read_text())
    assert spec["searcher"] == "random"
    assert spec["run_options"] == {"rescore_top": 0, "no_dashboard": True, "dashboard_every": 5.0, "mlflow": None,
                                   "max_concurrent": 1, "max_failures": 2, "rescore_scaled": False}  # given: in full
    before = {t.trial_id: [r["step"] for r in t.results] for t in load_experiment(path).trials}
    assert len(before) == 2
    assert_one_line_error(run_cli("orchestrator.sweep", "vae", "--resume", "--trials", "1", *args),
                          "--trials 1 is fewer than the 2 trials")
    assert_one_line_error(run_cli("orchestrator.sweep", "vae", "--resume", "--trials", "4", "--set", "latent_dim=4",
                                  *args), "--set latent_dim=4 changes the search space of ext")
    assert json.loads((path / "sweep.json").read_text())["trials"] == 2  # refused: nothing written

    proc = sweep("--resume", "--trials", "4")
    assert ("[sweep] resuming with the options it was run with (sweep.json): --rescore-top 0 --no-dashboard "
            "--dashboard-every 5.0 --max-concurrent 1 --max-failures 2") in proc.stdout
    assert "re-scoring" not in proc.stdout and not (path / "dashboard.html").exists()
    assert "extending ext from 2 to 4 trials" in proc.stdout and "4 of 4 trials done" in proc.stdout, proc.stdout
    assert json.loads((path / "sweep.json").read_text())["trials"] == 4
    exp = load_experiment(path)
    assert len(exp.trials) == 4 and set(before) < {t.trial_id for t in exp.trials}
    for trial in exp.trials:  # the first two untouched, the new two trained in full
        assert [r["step"] for r in trial.results] == before.get(trial.trial_id, [0, 10, 20])
    assert set(exp.statuses().values()) == {"finished"}
    study = optuna.load_study(study_name="ext", storage=f"sqlite:///{path}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4  # one study, four trials

    # given again, an option wins (the others are still reused); an extension saves them
    proc = sweep("--resume", "--trials", "5", "--rescore-top", "1")
    assert "re-scoring the top 1 checkpoints" in proc.stdout and "--rescore-top 0" not in proc.stdout
    assert "--no-dashboard" in proc.stdout and "Optuna sampler random" in proc.stdout
    spec = json.loads((path / "sweep.json").read_text())
    assert spec["run_options"]["rescore_top"] == 1 and spec["run_options"]["no_dashboard"] is True
    # the feature space its trials were scored in, not chosen or checked again: its first check kept
    assert "passed its check" not in proc.stdout and spec["feature_network"]["check"]["passed"]


NARROW = """
recon = "bce"
beta = 1.0
arch = "mlp"
batch_size = 64
[lr]
distribution = "loguniform"
low = 3e-4
high = 3e-3
[latent_dim]
distribution = "int"
low = 8
high = 32
"""


def test_a_warm_started_sweep_starts_near_the_earlier_best(ray_address, tmp_path):
    """24 earlier trials (copies of a real one, scored as if FID were best at lr 1e-3) seed a
    sweep of a narrower space: those outside it are dropped, and TPE's first two proposals land
    near lr 1e-3. (The same seeded study in Optuna alone: TPE put both within a quarter decade of
    1e-3 for 91 of 100 sampler seeds, random search for 25.)"""
    common = ["--dataset", "digits", "--max-steps", "10", "--eval-every", "10", "--scheduler", "fifo",
              "--storage", str(tmp_path), "--address", ray_address, "--no-dashboard"]
    first = run_cli("orchestrator.sweep", "vae", "--trials", "1", "--name", "wide", *common)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (real,) = load_experiment(tmp_path / "wide").trials
    lrs = [2e-4 * 1.125 ** i for i in range(24)]  # 2e-4 to 3.0e-3; the first four below the new space's 3e-4
    for i, lr in enumerate(lrs):
        params = {**real.params, "lr": lr, "latent_dim": 64 if i % 6 == 5 else 16}  # four outside 8..32
        if i % 6 == 2:  # as if made before latent_dim existed: it takes the family's default, 16
            del params["latent_dim"]
        fid = 20 + 80 * abs(math.log10(lr / 1e-3))
        folder = tmp_path / "wide" / f"run_trial_{i:08x}_{i + 2}_copy"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(params))
        rows = [dict(r, config=params, fid=fid + 50 * (r["step"] == 0), fid_best=fid) for r in real.results]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.rmtree(real.path)
    (tmp_path / "narrow.toml").write_text(NARROW)

    proc = run_cli("orchestrator.sweep", "vae", "--trials", "2", "--name", "narrow", "--space",
                   str(tmp_path / "narrow.toml"), "--warm-start", str(tmp_path / "wide"), "--seed", "0", *common)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warm start: 16 trials of wide seed the study; 8 dropped" in proc.stdout, proc.stdout
    study = optuna.load_study(study_name="narrow", storage=f"sqlite:///{tmp_path}/narrow/optuna.db")
    seeded = [t for t in study.trials if "warm_start_from" in t.user_attrs]
    assert len(seeded) == 16 and all(t.user_attrs["warm_start_from"].startswith("wide/") for t in seeded)
    assert all(set(t.params) == {"lr", "latent_dim"} for t in seeded)  # the fixed ones are fixed
    defaulted = {t.user_attrs["warm_start_from"]: t.params["latent_dim"] for t in seeded
                 if t.user_attrs["warm_start_from"] in ("wide/00000008", "wide/0000000e", "wide/00000014")}
    assert defaulted == dict.fromkeys(["wide/00000008", "wide/0000000e", "wide/00000014"], 16), defaulted
    exp = load_experiment(tmp_path / "narrow")
    assert len(exp.trials) == 2 and json.loads((tmp_path / "narrow" / "sweep.json").read_text())["warm_start"]
    proposed = sorted(t.params["lr"] for t in exp.trials)
    assert all(abs(math.log10(lr / 1e-3)) < 0.25 for lr in proposed), proposed
    assert all(8 <= t.params["latent_dim"] <= 32 for t in exp.trials)
    from dashboards.build import build  # the page says so too (issue 30 item 5)

    page = build([exp]).read_text()
    assert "warm-started: 16 scored trials of" in page and str(tmp_path / "wide") in page and "8 dropped" in page

    assert_one_line_error(run_cli("orchestrator.sweep", "dcgan", "--warm-start", str(tmp_path / "wide"),
                                  "--storage", str(tmp_path)), "is a vae sweep; this is dcgan")
    assert_one_line_error(run_cli("orchestrator.sweep", "vae", "--warm-start", str(tmp_path / "nowhere"),
                                  "--storage", str(tmp_path)), "not an experiment directory")


def test_an_interrupted_sweep_resumes_its_trials_from_their_checkpoints_after_ctrl_c_and_after_a_kill(ray_address,
                                                                                                      tmp_path):
    """Stop the driver once every trial has a checkpoint with Ctrl-C, resume, stop the resumed
    driver once every trial has a newer checkpoint by killing it outright (nothing is saved then),
    and resume again: each run continues the trials from their checkpoints, not from step 0, and
    the study stays whole. Ctrl-C exits 130 with the project's own resume command and the trials
    show as interrupted; after each stop every checkpoint on disk is in the trials' histories;
    after the last resume each trial's progress.csv holds its whole history, one row per report."""
    # one batch size, so neither trial is done before the other's first checkpoint; a digits step
    # takes ~30 ms, so enough steps that the driver is stopped long before the end
    args = ["dcgan", "--dataset", "digits", "--set", "batch_size=64", "--trials", "2", "--max-steps", "500",
            "--eval-every", "50", "--log-every", "25", "--scheduler", "fifo", "--storage", str(tmp_path), "--name",
            "cut", "--address", ray_address, "--no-dashboard"]
    resume = ["dcgan", "--resume", "--name", "cut", "--storage", str(tmp_path), "--address", ray_address,
              "--no-dashboard"]
    path = tmp_path / "cut"

    def checkpointed_after(steps: dict) -> bool:
        """Every trial has a checkpoint after its step in `steps` whose report has reached Tune (the
        checkpoint is on disk first)."""
        try:
            trials = load_experiment(path).trials
        except BadInput:  # sweep.json not written yet
            return False
        done = [t for t in trials if t.checkpoints and t.last_step >= t.checkpoints[-1].step > steps.get(t.trial_id, 0)]
        return len(done) == 2

    def stop_when_checkpointed(argv: list, stop: signal.Signals, steps: dict, output):
        driver = start_cli("orchestrator.sweep", *argv, output=output)
        deadline = time.time() + 300
        while time.time() < deadline and not checkpointed_after(steps):
            time.sleep(0.5)
        driver.send_signal(stop)  # Ctrl-C: Tune saves its state and stops the trials; SIGKILL: nothing is saved now
        driver.wait(timeout=120)
        stopped = load_experiment(path)
        saved = {t.trial_id: {c.step for c in t.checkpoints} for t in stopped.trials}
        for trial in stopped.trials:  # nothing on disk that the leaderboard doesn't know
            assert saved[trial.trial_id] <= {r["step"] for r in trial.results}, (saved, trial.results)
        reached = {t.trial_id: t.last_step for t in stopped.trials}
        assert len(reached) == 2 and all(0 < step < 500 for step in reached.values()), reached
        return driver, stopped, saved, reached

    driver, stopped, first_saved, reached = stop_when_checkpointed(args, signal.SIGINT, {}, tmp_path / "driver.txt")
    said = (tmp_path / "driver.txt").read_text()
    assert driver.returncode == 130, said[-3000:]
    assert said.strip().splitlines()[-1].startswith("interrupted: 2 of 2 trials unfinished"), said[-3000:]
    assert f"--name cut --storage {tmp_path} --resume" in said and "Tuner.restore" not in said, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    assert set(stopped.statuses().values()) == {"interrupted"}
    # the resumed run went on from the checkpoints: every trial saved a newer one before the kill
    _, _, second_saved, _ = stop_when_checkpointed(resume, signal.SIGKILL, reached, tmp_path / "resumed.txt")

    proc = run_cli("orchestrator.sweep", *resume)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = load_experiment(path)
    assert len(exp.trials) == 2
    for trial in exp.trials:
        steps = [r["step"] for r in trial.results]
        assert steps[0] == 0 and steps[-1] == 500 and steps == sorted(set(steps))  # history kept
        # each run's reports come from a new trial actor. Lines of a stopped run can still reach
        # result.json after the resume began (Tune syncs its driver-side copy up), so the first
        # report of each run is told by the process that made it, not by its place in the file.
        assert len(list(trial.path.glob("result-before-resume-*.json"))) == 2  # kept aside at each resume
        rows = [json.loads(line) for line in (trial.path / "result.json").read_text().splitlines()]
        pids = list(dict.fromkeys(r["pid"] for r in rows if "pid" in r))  # no pid: a checkpoint's report
        assert len(pids) == 3, pids
        for pid, saved in zip(pids[1:], (first_saved, second_saved)):
            resumed = next(r["step"] for r in rows if r.get("pid") == pid)
            assert resumed - 25 in saved[trial.trial_id], (trial.trial_id, resumed, saved)  # from a checkpoint
        progress = pd.read_csv(trial.path / "progress.csv")
        assert list(progress["step"]) == list(range(0, 501, 25)), list(progress["step"])
    study = optuna.load_study(study_name="cut", storage=f"sqlite:///{path}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_histories_are_rewritten_where_tunes_files_hold_other_steps_in_as_many_rows(tiny_experiment, tmp_path):
    """A killed and resumed run can leave progress.csv one report short and another repeated (CI saw
    steps ..., 175, 225, 250, 275, 275, ...): as many rows as the history, other steps. The driver's
    rewrite compares the steps, so such a file is rewritten, and a whole one is left as it is."""
    from trainables.experiment_writers import write_histories

    path = shutil.copytree(tiny_experiment, tmp_path / "tiny")
    (trial,) = load_experiment(path).trials
    steps = [r["step"] for r in trial.results]
    assert len(steps) >= 3, steps
    progress = trial.path / "progress.csv"
    table = pd.read_csv(progress)
    whole = progress.read_text()
    write_histories(load_experiment(path))
    assert progress.read_text() == whole  # nothing to mend: left as Tune wrote it
    table.iloc[1] = table.iloc[2]  # one report lost, the next one twice
    table.to_csv(progress, index=False)
    assert len(pd.read_csv(progress)) == len(steps)
    write_histories(load_experiment(path))
    assert list(pd.read_csv(progress)["step"]) == steps


def test_defaults_are_trial_1_unless_the_space_excludes_them(tmp_path, capsys):
    """TPE and random sweeps try the family's defaults first; a space that excludes them says so in
    one line and samples as before; PBT, whose population starts at random, has no such trial."""
    spec = sweep_spec("vae", "--searcher", "random")
    defaults = get_family("vae").defaults
    assert spec.baseline and spec.baseline == {k: defaults[k] for k in spec.baseline}
    narrow = tmp_path / "narrow.toml"
    narrow.write_text('[lr]\ndistribution = "loguniform"\nlow = 1e-2\nhigh = 1e-1\n')
    capsys.readouterr()
    spec = sweep_spec("vae", "--space", str(narrow))
    assert spec.baseline is None
    said = capsys.readouterr().out.strip().splitlines()
    assert said == [f"[sweep] the family's defaults are not trial 1: lr's default {defaults['lr']!r} is not in "
                    f"[0.01, 0.1] in {narrow}"], said
    assert sweep_spec("dcgan", "--scheduler", "pbt").baseline is None


def test_budget_splits_between_search_and_final_phase(capsys):
    """--budget B with --search-horizon long (ASHA only): the search may spend 3/4 B in all, a trial
    up to half of that, with rungs x4 from where all trials together spend a quarter of the search;
    --search-horizon even (the default): each search trial may train 3/4 B / trials steps. Steps
    fall on evaluations; the final phase gets what the search left; PBT, which has no final phase,
    gets all of it."""
    from orchestrator.tuners import final_steps, search_description

    spec = sweep_spec("dcgan", "--budget", "12800", "--trials", "16", "--eval-every", "100", "--search-horizon", "long")
    assert (spec.max_steps, spec.search_budget, spec.grace_period, spec.reduction_factor) == (4800, 9600, 100, 4)
    assert ("rungs at step 100, 400, 1600: the top 1/4 go on), the search stops at 9600 trial-steps of --budget "
            "12800") in search_description(spec)
    assert final_steps(spec, 9600, candidates=1) == 3200 and final_steps(spec, 5000, candidates=1) == 7800
    given = sweep_spec("dcgan", "--budget", "12800", "--eval-every", "100", "--reduction-factor", "3",
                       "--grace-period", "200", "--search-horizon", "long")
    assert (given.grace_period, given.reduction_factor) == (200, 3)  # given rungs win
    for even in ((), ("--search-horizon", "even"), ("--scheduler", "fifo")):
        spec = sweep_spec("dcgan", "--budget", "1000", "--trials", "4", "--eval-every", "50", *even)
        assert (spec.max_steps, spec.final_steps, spec.budget, spec.final_top, spec.search_budget) == \
            (150, 0, 1000, 1, None)
    assert spec.grace_period is None and spec.reduction_factor == 2
    assert final_steps(spec, 4 * 150, candidates=1) == 400 and final_steps(spec, 300, candidates=1) == 700  # ASHA stopped some
    assert final_steps(spec, 600, candidates=2) == 400 and final_steps(spec, 1200, candidates=2) == 0  # shared
    spec.budget, spec.final_steps = None, 300
    assert final_steps(spec, 600, candidates=3) == 900  # --final-steps: each candidate's
    quick = sweep_spec("dcgan", "--quick")  # the demo: --budget 4800 over 8 trials, FID every 150 steps
    assert (quick.trials, quick.max_steps, quick.final_steps, quick.budget, quick.eval_every) == (8, 450, 0, 4800, 150)
    stepped = sweep_spec("dcgan", "--quick", "--max-steps", "300")  # steps given: --quick's steps, no budget
    assert (stepped.max_steps, stepped.final_steps, stepped.budget) == (300, 600, None)
    assert sweep_spec("dcgan", "--quick", "--budget", "2400").max_steps == 225 // 150 * 150
    pbt = sweep_spec("dcgan", "--scheduler", "pbt", "--budget", "1000", "--trials", "4",
                                               "--eval-every", "50")
    assert (pbt.max_steps, pbt.final_steps, pbt.budget, pbt.search_budget) == (250, 0, None, None)
    assert "no final phase under PBT" in capsys.readouterr().out
    for argv, error in ((("--budget", "1000", "--max-steps", "100"), "not both"),
                        (("--search-horizon", "even"), "give --budget too"),
                        (("--budget", "1000", "--search-horizon", "long", "--scheduler", "fifo"), "needs ASHA")):
        with pytest.raises(UsageError, match=error):
            sweep_spec("dcgan", *argv)


def test_final_halving_shares_the_final_steps_in_rungs_that_halve_the_candidates():
    """--final-halving's rungs: half the final phase's trial-steps go to the rungs, half to the last
    candidate after them; each rung falls on an evaluation and is twice as far as the one before."""
    from orchestrator.spec import halving_rungs

    assert halving_rungs(8000, 2, 100) == ([2000], [1], 6000)  # 2 x 2000, then 4000 more for one
    assert halving_rungs(8000, 3, 100) == ([1300], [1], 5400)  # 3 x 1300 + 4100
    assert halving_rungs(8000, 4, 100) == ([600, 1200], [2, 1], 5600)  # 4 x 600 + 2 x 600 + 4400
    assert halving_rungs(300, 2, 100) is None  # the rung would come before the first evaluation
    with pytest.raises(UsageError, match="--final-halving shapes the final phase.*give --final-steps or --budget"):
        sweep_spec("gan", "--final-halving")
    assert not sweep_spec("gan", "--budget", "600").final_halving and not sweep_spec("gan", "--quick").final_halving
    assert sweep_spec("gan", "--budget", "600", "--final-halving").final_halving
    assert sweep_spec("gan", "--final-steps", "600", "--final-halving").final_halving
    with pytest.raises(UsageError, match="--final-halving shapes the final phase.*none: PBT's population"):
        sweep_spec("gan", "--budget", "600", "--scheduler", "pbt", "--final-halving")


def test_a_final_phase_by_halving_keeps_the_defaults_among_its_candidates_and_trains_the_best_at_its_rung_on(
        ray_address, tmp_path):
    """--budget --final-top 2 --final-halving: the search's top two and the defaults (trial 1,
    where they are not among them) continue together; at the rung the better
    (by the running best FID) goes on, the others stop there (or just after: one waits for the
    others' readings), and the phase stops once it has trained what the search left."""
    proc = run_cli("orchestrator.sweep", "gan", "--dataset", "digits", "--budget", "600", "--trials", "3",
                   "--eval-every", "20", "--log-every", "10", "--eval-samples", "300", "--final-top", "2",
                   "--final-halving", "--max-concurrent", "1", "--storage", str(tmp_path), "--name", "halving",
                   "--address", ray_address)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = load_experiment(tmp_path / "halving")
    finals = [t for t in exp.trials if t.final_from]
    top = list(dict.fromkeys(t.trial_id for t, _ in exp.ranked_checkpoints(rescored=False) if not t.final_from))
    assert exp.baseline_trial and {t.parent for t in finals} == set(top[:2]) | {exp.baseline_trial}  # before re-scoring
    rung = int(re.search(r"as successive halving, the weaker stopping at (\d+) steps", proc.stdout).group(1))
    starts = {t.trial_id: next(c.step for p in exp.search_trials for c in p.checkpoints
                               if p.trial_id == t.parent and c.path.name == Path(t.final_from).name) for t in finals}

    def at_rung(trial) -> float:
        return next(r["fid_best"] for r in trial.results if r["step"] - starts[trial.trial_id] >= rung and "fid_best" in r)

    survivor = next(t for t in finals if f"; {t.trial_id} goes on" in proc.stdout)
    stopped = [t for t in finals if t is not survivor]
    assert stopped and all(t.status(exp.spec["max_steps"]) == "stopped early" for t in stopped)
    assert all(rung <= t.last_step - starts[t.trial_id] < survivor.last_step - starts[survivor.trial_id]
               for t in stopped)
    assert all(at_rung(survivor) <= at_rung(t) for t in stopped)
    assert f"final phase, rung at {rung} steps: " in proc.stdout
    searched = sum(t.last_step for t in exp.search_trials)  # the phase's steps, of all its trials: what the search left
    trained = sum(t.last_step - starts[t.trial_id] for t in finals)
    assert 600 - searched - 20 < trained <= 600 - searched, (searched, trained)  # to an evaluation (--eval-every)
    assert (survivor.last_step - starts[survivor.trial_id]) % 20 == 0  # its last steps were evaluated
    assert survivor.last_step == survivor.final_until or f"trained; trial {survivor.trial_id} stops at" in proc.stdout


def test_a_budget_sweep_stops_its_search_at_its_share_and_its_final_phase_trains_the_best_on(ray_address, tmp_path):
    """--budget 400 --search-horizon long, one trial at a time: the search stops once its trials
    have trained 300 trial-steps in all (a trial may train 140), though trials of the 4 asked for
    were left. --grace-period 100 --reduction-factor 3: a trial stops only at its rung, step 100
    (the budget's own rung would be 20), or at its end; --startup-trials and --no-multivariate reach
    TPE; all four are said and kept in sweep.json.
    The final phase: the top configuration continues from its best checkpoint for the other 100
    trial-steps, as a trial of its own, which the leaderboard, best and the dashboard show.
    --final-decay: the final trial's learning rates fall from the searched values at its parent's
    checkpoint to 0 at its last step; the search's stay as searched."""
    from trainables.checkpoints import read_training_state

    proc = run_cli("orchestrator.sweep", "gan", "--dataset", "digits", "--budget", "400", "--search-horizon", "long",
                   "--trials", "4", "--eval-every", "20", "--log-every", "10", "--eval-samples", "300", "--grace-period", "100",
                   "--reduction-factor", "3", "--startup-trials", "2", "--no-multivariate", "--max-concurrent", "1",
                   "--final-decay", "--storage", str(tmp_path), "--name", "budget", "--address", ray_address)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ("4 trials of up to 140 steps, 1 at a time, scheduler asha (rungs at step 100: the top 1/3 go on), the "
            "search stops at 300 trial-steps of --budget 400 (--search-horizon long), Optuna sampler tpe (2 random "
            "trials first, one hyperparameter at a time)") in proc.stdout, proc.stdout[-3000:]
    spec = json.loads((tmp_path / "budget" / "sweep.json").read_text())
    assert [spec[k] for k in ("grace_period", "reduction_factor", "startup_trials", "multivariate")] == [100, 3, 2, False]
    exp = load_experiment(tmp_path / "budget")
    search, (final,) = exp.search_trials, [t for t in exp.trials if t.final_from]
    steps = [t.last_step for t in sorted(search, key=lambda t: t.results[0]["timestamp"])]
    assert sum(steps) == 300 and len(steps) < 4, steps
    assert set(steps[:-1]) <= {100, 140}, steps  # the last one started is the one the budget cut
    assert "the search has trained 300 of its 300 trial-steps: it stops here" in proc.stdout
    assert not [t for t in search if t.error]

    parent, best = next((t, c) for t, c in exp.ranked_checkpoints() if not t.final_from)  # the search's best
    assert final.parent == parent.trial_id and final.final_until == best.step + 100
    assert final.params == parent.params and "final_from" not in leaderboard(exp).columns
    assert [r["step"] for r in final.results] == list(range(best.step + 10, best.step + 101, 10))  # from there on
    assert final.status(exp.spec["max_steps"]) == "finished" and final.last_step == final.final_until
    for checkpoint in final.checkpoints:
        config = json.loads((checkpoint.path / "config.json").read_text())
        assert config["started_from"]["trial_id"] == parent.trial_id and config["started_from"]["step"] == best.step
    assert list(leaderboard(exp)["role"]).count(f"final of {parent.trial_id}") == 1
    assert f"final phase: trial {final.trial_id} trained trial {parent.trial_id}'s configuration" in proc.stdout
    export_best(tmp_path / "budget", top=3)
    exported = json.loads((tmp_path / "budget" / "best" / "best.json").read_text())["checkpoints"]
    assert final.trial_id in {c["trial"] for c in exported}
    assert f"final of {parent.trial_id}" in (tmp_path / "budget" / "dashboard.html").read_text()

    def rates(checkpoint) -> list[float]:
        state = read_training_state(checkpoint.path)["optimizers"]
        return [state[name]["param_groups"][0]["lr"] for name in ("generator", "discriminator")]

    for trial in search:
        assert all(rates(c) == pytest.approx([trial.params["lr_g"], trial.params["lr_d"]]) for c in trial.checkpoints)
    searched, end = [parent.params["lr_g"], parent.params["lr_d"]], final.final_until
    assert final.checkpoints
    for checkpoint in final.checkpoints:  # the rate of the step before it: (end - (step - 1)) / 100 of the searched
        assert rates(checkpoint) == pytest.approx([lr * (end - checkpoint.step + 1) / 100 for lr in searched])
