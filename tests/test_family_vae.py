"""The VAE and the one-class VAE anomaly detector: real sweeps on a Fashion-MNIST subset (tiny
fixed networks), their best checkpoints against the untrained step-0 report, and every
inference mode of each through `python -m orchestrator.infer`."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import family_sweep, run_cli
from trainables.experiment import load_experiment
from orchestrator.infer import main as infer_main
from trainables.datasets import ImageData
from trainables.errors import BadInput
from trainables.models import get_family

pytestmark = pytest.mark.slow

SUBSET = "2000"
VAE_SPACE = """
arch = "conv"
width = 8
latent_dim = 8
batch_size = 64
[lr]
distribution = "loguniform"
low = 2e-3
high = 3e-3
"""
ANOMALY_SPACE = """
hidden = 128
latent_dim = 8
batch_size = 32
[lr]
distribution = "loguniform"
low = 1e-3
high = 3e-3
"""


def grid_size(images_per_row: int, rows: int, side: int = 28) -> tuple[int, int]:
    """torchvision's make_grid with 2 px padding."""
    return images_per_row * (side + 2) + 2, rows * (side + 2) + 2


def best_checkpoint(path, trials: int = 2):
    exp = load_experiment(path)
    assert len(exp.trials) == trials
    for trial in exp.trials:
        assert trial.status(exp.spec["max_steps"]) == "finished", trial.error
    trial, ckpt = exp.ranked_checkpoints()[0]
    assert trial.results[0]["step"] == 0  # the untrained model's report
    return trial, ckpt


def infer(checkpoint, mode, out, *args, subprocess=False):
    """`python -m orchestrator.infer CHECKPOINT MODE ...`: as a user runs it (subprocess=True), or
    its entry point in this process, which spares each further mode seconds of imports."""
    argv = [str(checkpoint.path), mode, "--out", str(out), *args]
    if subprocess:
        proc = run_cli("orchestrator.infer", *argv)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    else:
        assert infer_main(argv) == 0
    return out


@pytest.fixture(scope="module")
def vae_sweep(ray_address, tmp_path_factory):
    """Conv VAE, one trial in the trial's own process (an lr above the default's 1e-3: 60 steps at
    1e-3 lowered the FID by 13%, not the 30% asserted, with two DDP workers). DDP: ddpm,
    siamese_gan, cyclegan, and dcgan across two nodes (test_cluster.py)."""
    storage = tmp_path_factory.mktemp("vae")
    (storage / "space.toml").write_text(VAE_SPACE)
    return family_sweep(ray_address, storage, "vae", "--space", str(storage / "space.toml"), "--subset", SUBSET,
                        "--no-dashboard", trials=1)


@pytest.fixture(scope="module")
def anomaly_sweep(ray_address, tmp_path_factory):
    storage = tmp_path_factory.mktemp("vae_anomaly")
    (storage / "space.toml").write_text(ANOMALY_SPACE)
    return family_sweep(ray_address, storage, "vae_anomaly", "--space", str(storage / "space.toml"),
                        "--subset", SUBSET, "--set", "normal_class=1")  # in-process, as vae_sweep


def test_vae_sweep_lowers_fid_and_infers(vae_sweep, tmp_path):
    trial, best = best_checkpoint(vae_sweep, trials=1)
    untrained = trial.results[0]
    assert math.isfinite(best.metrics["fid"]) and best.metrics["fid"] < 0.7 * untrained["fid"], (best.metrics, untrained)
    assert best.metrics["elbo"] > untrained["elbo"] + 50  # nats per held-out image
    assert best.metrics["kl_heldout"] > 0 and best.metrics["recon_heldout"] > 0
    with Image.open(best.path / "samples.png") as image:  # 6 rows of samples, inputs, reconstructions
        assert image.size == grid_size(8, 8)

    with Image.open(infer(best, "sample", tmp_path / "s.png", "--n", "16", subprocess=True)) as image:
        assert image.size == grid_size(4, 4)
    with Image.open(infer(best, "reconstruct", tmp_path / "r.png", "--n", "6")) as image:
        assert image.size == grid_size(6, 2)
    with Image.open(infer(best, "interpolate", tmp_path / "i.png", "--n", "3", "--steps", "5")) as image:
        assert image.size == grid_size(5, 3)
        rows = np.asarray(image.convert("L"), dtype=float)
    assert rows[2:30, 2:30].std() > 1 and np.abs(rows[2:30, 2:30] - rows[2:30, 122:150]).mean() > 1  # not blank, ends differ


def test_vae_anomaly_sweep_separates_the_normal_class(anomaly_sweep, tmp_path):
    trial, best = best_checkpoint(anomaly_sweep)
    assert json.loads((best.path / "config.json").read_text())["hp"]["normal_class"] == 1
    auroc = best.metrics["auroc"]
    assert math.isfinite(auroc) and auroc >= 0.8 and auroc > trial.results[0]["auroc"], (auroc, trial.results[0])
    evaluation = json.loads((best.path / "evaluation.json").read_text())
    assert evaluation["normal_class"] == "Trouser" and evaluation["roc"]["auroc"] == pytest.approx(auroc)
    fpr, tpr = evaluation["roc"]["fpr"], evaluation["roc"]["tpr"]
    assert 2 <= len(fpr) == len(tpr) <= 200 and fpr[0] == 0 and fpr[-1] == 1 and fpr == sorted(fpr)
    most, least = evaluation["most_anomalous"], evaluation["least_anomalous"]
    assert len(most) == len(least) == 8 and set(most[0]) == {"index", "label", "score"}
    assert min(x["score"] for x in most) >= max(x["score"] for x in least)
    assert sum(x["label"] == "Trouser" for x in least) >= 6  # a trouser model finds trousers least anomalous
    with Image.open(best.path / "samples.png") as image:
        assert image.size == grid_size(8, 2)
    assert "Anomaly detection" in (anomaly_sweep / "dashboard.html").read_text()

    with open(infer(best, "score", tmp_path / "scores.csv", "--n", "20")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and all(math.isfinite(float(r["score"])) for r in rows)
    trousers = [float(r["score"]) for r in rows if "(Trouser)" in r["image"]]
    others = [float(r["score"]) for r in rows if "(Trouser)" not in r["image"]]
    assert trousers and np.median(trousers) < np.median(others)
    infer(best, "roc", tmp_path / "roc.html", subprocess=True)
    roc = json.loads((tmp_path / "roc.json").read_text())
    assert roc["normal_class"] == "Trouser" and roc["auroc"] >= 0.8 and len(roc["auroc_vs_each_class"]) == 9
    assert "plotly" in (tmp_path / "roc.html").read_text().lower()


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 32, 32), (1, 30, 22)])
def test_vae_networks_take_any_image_shape(arch, shape):
    family = get_family("vae")
    hp = {**family.defaults, "arch": arch, "hidden": 32, "width": 4}
    modules = family.build(hp, {"shape": list(shape)})
    x = torch.rand(3, *shape) * 2 - 1
    losses = family.train_step(modules, family.optimizers(modules, hp), {"x": x}, hp)
    assert all(torch.isfinite(v) for v in losses.values())
    assert family.decode(modules, family.encode(modules, x, hp), hp).shape == x.shape
    samples = family.generate(modules, 5, hp, seed=7)
    assert samples.shape == (5, *shape) and samples.abs().max() <= 1
    assert torch.equal(samples, family.generate(modules, 5, hp, seed=7))


def test_vae_anomaly_refuses_bad_normal_class_and_multilabel_data():
    family = get_family("vae_anomaly")
    x = np.zeros((6, 1, 8, 8), np.uint8)
    data = ImageData("toy", x, np.array([0, 1, 2, 0, 1, 2]), x, np.array([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], "memory")
    kept = family.prepare_data(data, {**family.defaults, "normal_class": 2})
    assert kept.train_y.tolist() == [2, 2] and len(kept.test_x) == 6  # held-out split stays whole
    with pytest.raises(BadInput, match="normal_class must be a class index from 0 to 2"):
        family.prepare_data(data, {**family.defaults, "normal_class": 3})
    with pytest.raises(BadInput, match="score must be one of"):
        family.prepare_data(data, {**family.defaults, "score": "psnr"})
    multi = ImageData("attrs", x, np.ones((6, 2), np.uint8), x, np.ones((6, 2), np.uint8), ["p", "q"], "memory")
    with pytest.raises(BadInput, match="multi-hot"):
        family.check_data(multi.info())
