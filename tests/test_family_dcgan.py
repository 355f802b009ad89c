"""DCGAN's encoder: it learns to invert the generator (a plain in-process check, no Ray), and a
real digits sweep's checkpoint drives `infer interpolate --input` and `infer arithmetic`."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import family_sweep, run_cli
from trainables.experiment import load_experiment
from trainables.datasets import load_dataset
from trainables.family import seeded_normal
from trainables.models import get_family
from trainables.feature_networks import to_float

SPACE = """
width = 8
latent_dim = 16
batch_size = 32
[lr_g]
distribution = "loguniform"
low = 1e-3
high = 2e-3
"""
SIDE = 16  # digits are 8x8 upscaled to 16x16


def grid_size(images_per_row: int, rows: int) -> tuple[int, int]:
    """torchvision's make_grid with 2 px padding."""
    return images_per_row * (SIDE + 2) + 2, rows * (SIDE + 2) + 2


def test_trained_encoder_inverts_the_generator_better_than_an_untrained_one():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    family, data = get_family("dcgan"), load_dataset("digits")
    hp = {**family.defaults, "width": 8, "latent_dim": 16, "batch_size": 32, "lr_g": 1e-3, "lr_d": 1e-3}
    modules = family.build(hp, data.info())
    untrained_encoder = family.build(hp, data.info())["encoder"]
    optimizers = family.optimizers(modules, hp)
    x = to_float(torch.from_numpy(data.train_x))
    rng = np.random.default_rng(0)
    for _ in range(300):
        losses = family.train_step(modules, optimizers, {"x": x[rng.choice(len(x), 32, replace=False)]}, hp)
    assert set(losses) == set(family.loss_names)

    for m in modules.values():
        m.eval()
    trained = dict(modules)
    untrained = {**modules, "encoder": untrained_encoder.eval()}  # the same trained generator
    z = seeded_normal((500, 16), 1, torch.device("cpu"))
    fake = family.decode(modules, z, hp)
    real = to_float(torch.from_numpy(data.test_x))

    def latent_mse(m):
        return F.mse_loss(family.encode(m, fake, hp), z).item()

    def recon_l1(m):  # pixel L1 of G(E(x)) against held-out real digits
        return F.l1_loss(family.decode(m, family.encode(m, real, hp), hp), real).item()

    assert latent_mse(trained) < 0.9 * latent_mse(untrained), (latent_mse(trained), latent_mse(untrained))
    assert recon_l1(trained) < 0.7 * recon_l1(untrained), (recon_l1(trained), recon_l1(untrained))


@pytest.fixture(scope="module")
def checkpoint(ray_address, tmp_path_factory):
    storage = tmp_path_factory.mktemp("experiments")
    space = storage / "space.toml"
    space.write_text(SPACE)
    path = family_sweep(ray_address, storage, "dcgan", "--dataset", "digits", "--space", str(space),
                        "--no-dashboard", trials=1, max_steps=80, eval_every=40)
    exp = load_experiment(path)
    (trial,) = exp.trials
    # the loop reports the encoder's quality at every evaluation, the untrained one at step 0
    evaluated = [r for r in trial.results if np.isfinite(r.get("recon_l1", np.nan))]
    assert [r["step"] for r in evaluated] == [0, 40, 80]
    assert evaluated[-1]["recon_l1"] < evaluated[0]["recon_l1"]
    assert evaluated[-1]["latent_mse"] < evaluated[0]["latent_mse"]
    return exp.ranked_checkpoints()[0][1].path


@pytest.mark.slow
def test_interpolate_between_two_input_images(checkpoint, tmp_path):
    data = load_dataset("digits")
    inputs = []
    for digit in (0, 7):
        image = data.test_x[np.flatnonzero(data.test_y == digit)[0]][0]
        inputs.append(tmp_path / f"{digit}.png")
        Image.fromarray(image).save(inputs[-1])
    out = tmp_path / "interpolation.png"
    proc = run_cli("orchestrator.infer", str(checkpoint), "interpolate", "--input", *map(str, inputs),
                   "--steps", "6", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(out) as image:
        assert image.size == grid_size(6, 1)
        pixels = np.asarray(image.convert("L"), dtype=float)
    ends = [pixels[2:2 + SIDE, 2 + i * (SIDE + 2):2 + i * (SIDE + 2) + SIDE] for i in (0, 5)]
    assert np.abs(ends[0] - ends[1]).mean() > 1  # the walk goes somewhere: its ends differ


@pytest.mark.slow
def test_latent_arithmetic_on_digit_classes(checkpoint, tmp_path):
    out = tmp_path / "arithmetic.png"
    proc = run_cli("orchestrator.infer", str(checkpoint), "arithmetic", "--expr", "0 - 1 + 2", "--out", str(out),
                   "--per-class", "30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(out) as image:
        assert image.size == grid_size(4, 2)  # 3 class means and their sum, in pixel and in latent space
