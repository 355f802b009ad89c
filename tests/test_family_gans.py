"""GAN, conditional GAN and Siamese GAN: real two-trial sweeps on 16x16 digits (the Siamese one
with 2 DDP workers per trial), conditional sampling through the CLI, and a cGAN on CelebA-shaped
multi-hot attributes."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import family_sweep, run_cli
from trainables.experiment import load_experiment
from trainables.checkpoints import load_checkpoint
from trainables.datasets import load_dataset
from trainables.errors import BadInput
from trainables.feature_networks import to_float
from trainables.features import build_feature_network, get_feature_network
from trainables.models import get_family

pytestmark = pytest.mark.slow

# small fixed networks and one searched value each (a space must search something)
SPACES = {
    "gan": 'lr_g = 1e-3\nlr_d = 1e-3\nhidden = 128\n[latent_dim]\ndistribution = "choice"\nvalues = [16, 32]\n',
    "cgan": 'lr_g = 1e-3\nlr_d = 1e-3\nwidth = 16\nembed_dim = 16\n'
            '[latent_dim]\ndistribution = "choice"\nvalues = [32, 64]\n',
    "siamese_gan": 'lr_g = 1e-3\nlr_d = 1e-3\nwidth = 16\nembed_dim = 32\n'
                   '[pair_weight]\ndistribution = "choice"\nvalues = [0.5, 2.0]\n',
}


def sweep(ray_address, tmp_path, model, *args, max_steps, eval_every, trials=2):
    space = tmp_path / f"{model}.toml"
    space.write_text(SPACES[model])
    path = family_sweep(ray_address, tmp_path, model, "--dataset", "digits", "--space", str(space), "--seed", "0",
                        "--no-dashboard", *args, trials=trials, max_steps=max_steps, eval_every=eval_every)
    exp = load_experiment(path)
    assert len(exp.trials) == trials
    for trial in exp.trials:
        fids = trial.curve("fid")[1]
        assert len(fids) == max_steps // eval_every + 1 and all(math.isfinite(f) for f in fids), fids
    best_trial, best = exp.ranked_checkpoints()[0]
    untrained = best_trial.results[0]
    assert untrained["step"] == 0 and best.metrics["fid"] < 0.7 * untrained["fid"], (best.metrics, untrained)
    return best_trial, best


def test_mlp_gan_sweep_learns_and_decodes_latents(ray_address, tmp_path):
    # in-process, as most families: ddpm, siamese_gan and cyclegan sweep two DDP workers, dcgan two
    # across two nodes (test_cluster.py) and one under a one-worker TorchTrainer (test_faults.py)
    _, best = sweep(ray_address, tmp_path, "gan", max_steps=120, eval_every=60)
    model = load_checkpoint(best.path, "cpu")
    z = torch.randn(3, model.hp["latent_dim"])
    images = model.decode(z)
    assert images.shape == (3, 1, 16, 16) and images.abs().max() <= 1
    assert torch.equal(model.sample(4, seed=2), model.sample(4, seed=2))


def test_siamese_gan_sweep_with_two_ddp_workers_learns(ray_address, tmp_path):
    best_trial, best = sweep(ray_address, tmp_path, "siamese_gan", "--workers-per-trial", "2",
                             "--cpus-per-worker", "0.5", trials=1, max_steps=120, eval_every=60)
    logged = [r for r in best_trial.results if r["step"] > 0]
    assert all(0 < r["same_real"] < 1 and 0 < r["same_fake"] < 1 for r in logged)  # the pair head is trained


def test_cgan_sweep_learns_labels_and_infer_samples_the_requested_class(ray_address, tmp_path):
    best_trial, best = sweep(ray_address, tmp_path, "cgan", max_steps=200, eval_every=100)  # in-process
    assert best_trial.results[0]["label_accuracy"] < 0.3
    assert best.metrics["label_accuracy"] > 0.4, best.metrics

    classifier = build_feature_network(*get_feature_network(load_dataset("digits")))

    def rows_of(out, rows: int, per_row: int) -> tuple[np.ndarray, np.ndarray]:
        """The predicted digit of each tile, row by row, and the label margin of each row (issue 30 item 5)."""
        with Image.open(out) as image:
            grid = np.asarray(image.convert("L"))
        margin = grid.shape[1] - (per_row * 18 + 2)
        assert grid.shape == (rows * 18 + 2, margin + per_row * 18 + 2) and margin > 0, grid.shape
        tiles = np.stack([grid[2 + 18 * r:18 + 18 * r, margin + 2 + 18 * c:margin + 18 + 18 * c]
                          for r in range(rows) for c in range(per_row)])
        with torch.no_grad():
            predicted = classifier(to_float(torch.from_numpy(tiles.copy())[:, None])).argmax(1)
        return predicted.view(rows, per_row), np.stack([grid[18 * r:18 * r + 20, :margin] for r in range(rows)])

    out = tmp_path / "threes.png"
    proc = run_cli("orchestrator.infer", str(best.path), "sample", "--labels", "3", "--n", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    predicted, margins = rows_of(out, rows=2, per_row=8)  # 16 images of 16 px: 2 rows of 8, 2 px padding
    assert (predicted == 3).float().mean() >= 0.5, predicted.tolist()
    assert all((m < 128).any() for m in margins)  # each row's label is written beside it
    proc = run_cli("orchestrator.infer", str(best.path), "sample", "--labels", "3,7", "--n", "8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    predicted, margins = rows_of(out, rows=2, per_row=4)  # one row each
    assert (predicted[0] == 3).float().mean() >= 0.5 and (predicted[1] == 7).float().mean() >= 0.5, predicted.tolist()
    assert all((m < 128).any() for m in margins)


def test_cgan_trains_on_multi_hot_attributes():
    """CelebA's shape: 3x32x32 images and 40 binary attributes per image."""
    family = get_family("cgan")
    hp = {**family.defaults, "width": 8, "latent_dim": 8, "embed_dim": 4, "batch_size": 8}
    info = {"name": "celeba-like", "shape": [3, 32, 32], "classes": [f"attr{i}" for i in range(40)],
            "multilabel": True, "paired": False, "shape_a": None}
    torch.manual_seed(0)
    modules = family.build(hp, info)
    optimizers = family.optimizers(modules, hp)
    attributes = torch.randint(0, 2, (8, 40), dtype=torch.uint8)
    attributes[:, 0], attributes[:, 1] = 1, 0
    losses = family.train_step(modules, optimizers, {"x": torch.rand(8, 3, 32, 32) * 2 - 1, "y": attributes}, hp)
    assert set(losses) == set(family.loss_names) and all(math.isfinite(float(v)) for v in losses.values())
    for m in modules.values():
        m.eval()
    images = family.generate(modules, 5, hp, seed=1, labels=attributes[:5])
    assert images.shape == (5, 3, 32, 32) and images.abs().max() <= 1
    # without labels, attributes are drawn at the rates seen in training: attr0 always on, attr1 off
    drawn = family.generate(modules, 6, hp, seed=1)
    assert torch.equal(drawn, family.generate(modules, 6, hp, seed=1))
    rate = modules["generator"].attribute_rate
    assert rate[0] == 1 and rate[1] == 0
    with pytest.raises(BadInput, match="multi-hot"):
        family.generate(modules, 5, hp, seed=1, labels=torch.zeros(5, dtype=torch.long))
