"""DDPM: noise schedules, and a real two-trial sweep (2 DDP workers per trial) on 16x16 digits."""

import math
import tomllib

import pytest
import torch
from PIL import Image

from conftest import family_sweep, run_cli
from trainables.datasets import load_dataset
from trainables.experiment import load_experiment
from trainables.features import Evaluator, get_feature_network
from trainables.models import get_family
from trainables.models.ddpm import SCHEDULES, alphas_cumprod, q_sample, sampling_timesteps

pytestmark = pytest.mark.slow

# a U-Net of base width 8 (about 120k weights) and a 10-step sampler keep each evaluation at seconds
SPACE = """
lr = 2e-3
timesteps = 400
base_channels = 8
batch_size = 64
sample_steps = 10

[schedule]
distribution = "choice"
values = ["linear", "cosine"]
"""


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("timesteps", [200, 1000])
def test_schedules_decay_to_pure_noise(schedule, timesteps):
    betas = SCHEDULES[schedule](timesteps)
    assert betas.shape == (timesteps,) and ((betas > 0) & (betas < 1)).all()
    abar = alphas_cumprod(schedule, timesteps)
    assert (abar.diff() < 0).all() and abar[0] > 0.99  # signal only ever decays, from almost none
    x0 = torch.rand(256, 1, 16, 16) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.full((256,), timesteps - 1)
    xt = q_sample(x0, t, noise, abar)
    assert (xt - noise).abs().max() < 0.02  # at t = T - 1 the image is gone
    assert (q_sample(x0, torch.zeros(256, dtype=torch.long), noise, abar) - x0).abs().mean() < 0.15


def test_strided_sampling_visits_the_noisiest_step_first_and_ends_at_zero():
    assert sampling_timesteps(1000, 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert sampling_timesteps(5, 50) == [4, 3, 2, 1, 0]


def test_generate_is_seeded_and_needs_sides_divisible_by_4():
    family = get_family("ddpm")
    hp = {**family.defaults, "base_channels": 8, "sample_steps": 3, "eta": 1.0}
    info = {"name": "x", "shape": [3, 32, 32], "paired": False, "shape_a": None}
    modules = family.build(hp, info)
    a, b = (family.generate(modules, 5, hp, seed=7) for _ in range(2))
    assert a.shape == (5, 3, 32, 32) and torch.equal(a, b) and a.abs().max() <= 1
    assert not torch.equal(a, family.generate(modules, 5, hp, seed=8))
    with pytest.raises(ValueError, match="divisible by 4"):
        family.build(hp, {**info, "shape": [1, 30, 30]})
    with pytest.raises(ValueError, match="unknown noise schedule"):
        family.build({**hp, "schedule": "quadratic"}, info)


def test_sweep_evaluations_sample_in_eval_sample_steps_and_rescoring_in_sample_steps():
    family = get_family("ddpm")
    hp = {**family.defaults, "base_channels": 8, "sample_steps": 6, "eval_sample_steps": 2}
    data = load_dataset("digits")
    modules = family.build(hp, data.info())
    evaluator = Evaluator(data, 16, *get_feature_network(data, log=lambda _: None), torch.device("cpu"))
    shown = family.evaluate(modules, hp, evaluator, seed=5).images  # half as many as held-out images
    assert torch.equal(shown, family.generate(modules, 8, {**hp, "sample_steps": 2}, seed=5))
    assert not torch.equal(shown, family.generate(modules, 8, hp, seed=5))
    rescoring = family.rescoring_hp(hp)
    assert torch.equal(family.evaluate(modules, rescoring, evaluator, seed=5).images,
                       family.generate(modules, 16, hp, seed=5))


def test_sweep_learns_and_infer_samples_with_fewer_steps(ray_address, tmp_path):
    space = tmp_path / "ddpm.toml"
    space.write_text(SPACE)
    path = family_sweep(ray_address, tmp_path, "ddpm", "--dataset", "digits", "--space", str(space),
                        "--workers-per-trial", "2", "--cpus-per-worker", "0.5", "--seed", "0",
                        trials=1, max_steps=60, eval_every=30)  # trial 1: the defaults' cosine schedule
    exp = load_experiment(path)
    assert len(exp.trials) == 1 and exp.trials[0].params["schedule"] == "cosine"
    for trial in exp.trials:
        fids = trial.curve("fid")[1]
        assert len(fids) == 2 and all(math.isfinite(f) for f in fids)
        first = trial.results[0]  # the untrained U-Net (noise) is not scored: the first report is a log
        assert first["step"] == 15 and math.isnan(first["fid"]) and math.isfinite(first["loss"])
    # 60 steps: the cosine trial's EMA samples already score clearly better than its untrained model,
    # scored here as the sweep scores (500 held-out digits, 250 samples)
    best_trial, best = exp.ranked_checkpoints()[0]
    family, data = get_family("ddpm"), load_dataset("digits")
    hp = {**family.defaults, **tomllib.loads(SPACE), "schedule": best_trial.params["schedule"]}
    torch.manual_seed(0)
    evaluator = Evaluator(data, 500, *get_feature_network(data, log=lambda _: None), torch.device("cpu"))
    untrained = family.evaluate(family.build(hp, data.info()), hp, evaluator, seed=0).scores
    assert best.metrics["fid"] < 0.9 * untrained["fid"], (best.metrics, untrained)

    out = tmp_path / "grid.png"
    proc = run_cli("orchestrator.infer", str(best.path), "sample", "--n", "16", "--sample-steps", "10",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as image:
        assert image.size == (4 * 18 + 2, 4 * 18 + 2)  # 4x4 grid of 16px digits, 2px padding
