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


def sweep(ray_address, tmp_path, model, *args, max_steps, eval_every):
    space = tmp_path / f"{model}.toml"
    space.write_text(SPACES[model])
    path = family_sweep(ray_address, tmp_path, model, "--dataset", "digits", "--space", str(space), "--seed", "0",
                        "--no-dashboard", *args, max_steps=max_steps, eval_every=eval_every)
    exp = load_experiment(path)
    assert len(exp.trials) == 2
    for trial in exp.trials:
        fids = trial.curve("fid")[1]
        assert len(fids) == max_steps // eval_every + 1 and all(math.isfinite(f) for f in fids), fids
    best_trial, best = exp.ranked_checkpoints()[0]
    untrained = best_trial.results[0]
    assert untrained["step"] == 0 and best.metrics["fid"] < 0.7 * untrained["fid"], (best.metrics, untrained)
    return best_trial, best


def test_mlp_gan_sweep_learns_and_decodes_latents(ray_address, tmp_path):
    # one worker under a TorchTrainer (by default one worker trains in the trial's process): every
    # family is tested on both paths, in-process or TorchTrainer with 1 or 2 workers
    _, best = sweep(ray_address, tmp_path, "gan", "--torch-trainer", max_steps=120, eval_every=60)
    model = load_checkpoint(best.path, "cpu")
    z = torch.randn(3, model.hp["latent_dim"])
    images = model.decode(z)
    assert images.shape == (3, 1, 16, 16) and images.abs().max() <= 1
    assert torch.equal(model.sample(4, seed=2), model.sample(4, seed=2))


def test_siamese_gan_sweep_with_two_ddp_workers_learns(ray_address, tmp_path):
    best_trial, best = sweep(ray_address, tmp_path, "siamese_gan", "--workers-per-trial", "2",
                             "--cpus-per-worker", "0.5", max_steps=120, eval_every=60)
    logged = [r for r in best_trial.results if r["step"] > 0]
    assert all(0 < r["same_real"] < 1 and 0 < r["same_fake"] < 1 for r in logged)  # the pair head is trained


def test_cgan_sweep_learns_labels_and_infer_samples_the_requested_class(ray_address, tmp_path):
    best_trial, best = sweep(ray_address, tmp_path, "cgan", "--torch-trainer", max_steps=200, eval_every=100)
    assert best_trial.results[0]["label_accuracy"] < 0.3
    assert best.metrics["label_accuracy"] > 0.4, best.metrics

    out = tmp_path / "threes.png"
    proc = run_cli("orchestrator.infer", str(best.path), "sample", "--labels", "3", "--n", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as image:
        assert image.size == (4 * 18 + 2, 4 * 18 + 2)  # 4x4 grid of 16px digits, 2px padding
        grid = np.asarray(image.convert("L"))
    tiles = np.stack([grid[2 + 18 * r:18 + 18 * r, 2 + 18 * c:18 + 18 * c] for r in range(4) for c in range(4)])
    classifier = build_feature_network(*get_feature_network(load_dataset("digits")))
    with torch.no_grad():
        predicted = classifier(to_float(torch.from_numpy(tiles.copy())[:, None])).argmax(1)
    assert (predicted == 3).float().mean() >= 0.5, predicted.tolist()


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
