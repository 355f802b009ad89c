"""`--scheduler pbt`: a real Population Based Training sweep of two DCGAN trials on digits, on the
session's local Ray cluster. One trial starts with learning rates too small to keep up, so PBT
moves it onto the better trial's checkpoint with mutated learning rates."""

import json
import math

import pytest

from conftest import assert_one_line_error, run_cli
from trainables.cli import UsageError
from trainables.experiment import load_experiment
from orchestrator.spec import pbt_mutations
from trainables.family import ModelFamily
from trainables.ray_trial import TUNE_COPIES

pytestmark = pytest.mark.slow

# with --seed 0 the second trial draws both learning rates near 1e-4: it falls behind and is exploited
SPACE = """
width = 8
latent_dim = 16
batch_size = 32
[lr_g]
distribution = "loguniform"
low = 1e-4
high = 3e-3
[lr_d]
distribution = "loguniform"
low = 1e-4
high = 3e-3
"""
EVAL_EVERY = 120  # PBT compares trials at evaluations; by step 120 the slow trial is clearly behind


@pytest.fixture(scope="module")
def pbt_sweep(ray_address, tmp_path_factory):
    storage = tmp_path_factory.mktemp("experiments")
    space = storage / "space.toml"
    space.write_text(SPACE)
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--scheduler", "pbt", "--trials", "2",
                   "--max-steps", str(4 * EVAL_EVERY), "--eval-every", str(EVAL_EVERY), "--log-every", str(EVAL_EVERY),
                   "--eval-samples", "500", "--space", str(space), "--seed", "0", "--storage", str(storage),
                   "--name", "pbt", "--address", ray_address, "--no-dashboard", timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return storage / "pbt", proc


def test_pbt_restarts_a_poor_trial_from_a_better_ones_checkpoint_with_mutated_learning_rates(pbt_sweep):
    path, proc = pbt_sweep
    assert "PBT explores by itself" in proc.stdout and "Optuna is not used" in proc.stdout
    assert not (path / "optuna.db").exists()
    assert (path / "pbt_global.txt").read_text().strip()  # PBT's own log of its exploits
    # Tune's copies of the checkpoints (one per evaluation: 4 a trial), bounded to the newest TUNE_COPIES
    copies = [len(list(trial.glob("checkpoint_0*"))) for trial in path.glob("run_trial_*")]
    assert len(copies) == 2 and all(0 < n <= TUNE_COPIES for n in copies), copies
    exp = load_experiment(path)
    trials = {t.trial_id: t for t in exp.trials}
    assert len(trials) == 2

    exploited = [p.stem.removeprefix("pbt_policy_") for p in path.glob("pbt_policy_*.txt")]
    assert exploited and set(exploited) <= set(trials)
    checked = 0
    for trial_id in exploited:
        trial = trials[trial_id]
        # checkpoints written after the exploit say where the run started: the donor's checkpoint.
        # Newest first: a later exploit from an earlier donor step re-reports steps, and the history
        # keeps the later run's report of a step, so only the newest run's reports are sure to be there
        for ckpt in sorted(trial.checkpoints, key=lambda c: (c.path / "config.json").stat().st_mtime, reverse=True):
            config = json.loads((ckpt.path / "config.json").read_text())
            start = config.get("started_from") or {}
            if start.get("trial_id") in (None, trial_id):
                continue  # written before the exploit, or after a plain pause and resume
            assert start["trial_id"] in trials and start["step"] > 0
            # Tune's copy of the donor's checkpoint (maybe pruned since: the newest TUNE_COPIES are kept)
            assert f"/run_trial_{start['trial_id']}_" in start["checkpoint"], start
            # the donor's hyperparameters at that step, from its reports
            donor = {"hp": next(r["config"] for r in trials[start["trial_id"]].results if r["step"] == start["step"])}
            # the learning rates were mutated from the donor's; the rest of its hyperparameters kept
            for key in ("lr_g", "lr_d"):
                assert not math.isclose(config["hp"][key], donor["hp"][key]), (key, config["hp"], donor["hp"])
            assert config["hp"]["latent_dim"] == donor["hp"]["latent_dim"]
            # Tune's reports: one with the new learning rates comes one interval after the donor's
            # step (training went on from there, not from step 0), or at it if the donor had finished.
            # (An earlier exploit may have drawn the same mutation, x1.2 of the same donor's rate.)
            rows = trial.results  # result.json, with the reports Tune's restart would have overwritten
            new = [i for i, r in enumerate(rows) if math.isclose(r["config"]["lr_g"], config["hp"]["lr_g"])]
            expected = min(start["step"] + EVAL_EVERY, exp.spec["max_steps"])
            assert expected in [rows[i]["step"] for i in new], [(r["step"], r["config"]) for r in rows]
            assert new[0] > 0 and not math.isclose(rows[new[0] - 1]["config"]["lr_g"], config["hp"]["lr_g"])
            checked += 1
            break
    assert checked, "no checkpoint of an exploited trial records its donor"


def test_pbt_trials_end_better_than_untrained(pbt_sweep):
    path, _ = pbt_sweep
    exp = load_experiment(path)
    for trial in exp.trials:
        assert trial.results[0]["step"] == 0 and trial.last_step == exp.spec["max_steps"], trial.error
        fids = [r["fid"] for r in trial.results if math.isfinite(r.get("fid", math.nan))]
        assert fids[-1] < 0.5 * fids[0], fids  # the end against the untrained step-0 generator


def test_pbt_needs_learning_rates_to_mutate(tmp_path):
    proc = run_cli("orchestrator.sweep", "dcgan", "--scheduler", "pbt", "--set", "lr_g=0.001", "--set", "lr_d=0.001",
                   "--storage", str(tmp_path))
    assert_one_line_error(proc, "--scheduler pbt mutates lr_g, lr_d", "fixes them")
    with pytest.raises(UsageError, match="lists none"):
        pbt_mutations(ModelFamily(), {"lr": 0.1})
