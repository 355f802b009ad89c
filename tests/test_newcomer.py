"""What a newcomer meets first: infer's default grids on a real (tiny) VAE trained on digits, and
infer pointed at an experiment folder instead of a checkpoint."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, family_sweep, run_cli
from orchestrator.infer import main as infer_main
from trainables.experiment import load_experiment

CELL = 16 + 2  # a digit and torchvision's 2 px padding


def grid(columns: int, rows: int, cell: int = CELL) -> tuple[int, int]:
    return columns * cell + 2, rows * cell + 2


@pytest.fixture(scope="module")
def experiment(ray_address, tmp_path_factory) -> Path:
    return family_sweep(ray_address, tmp_path_factory.mktemp("newcomer"), "vae", "--dataset", "digits",
                        "--set", "arch=mlp", "--set", "hidden=64", "--set", "latent_dim=4", "--no-dashboard",
                        trials=1, max_steps=20, eval_every=10, name="tiny-vae")


@pytest.fixture(scope="module")
def checkpoint(experiment) -> Path:
    return load_experiment(experiment).ranked_checkpoints()[0][1].path


def infer(checkpoint: Path, mode: str, out: Path, *args: str) -> Image.Image:
    assert infer_main([str(checkpoint), mode, "--out", str(out), *args]) == 0
    with Image.open(out) as image:
        image.load()
    return image


@pytest.mark.slow
def test_reconstruct_and_interpolate_default_to_grids_of_8(checkpoint, tmp_path):
    assert infer(checkpoint, "reconstruct", tmp_path / "r.png").size == grid(8, 2)  # was 64 x 2: 1154x38
    assert infer(checkpoint, "interpolate", tmp_path / "i.png").size == grid(10, 8)  # was 64 rows
    # 20 inputs: pairs of rows (inputs, reconstructions) of 8, the last pair filled with white
    pixels = np.asarray(infer(checkpoint, "reconstruct", tmp_path / "r20.png", "--n", "20").convert("L"))
    assert pixels.shape[::-1] == grid(8, 6)
    inputs, last = pixels[2:2 + 16, 2:2 + 16], pixels[4 * CELL + 2:4 * CELL + 18, 2:18]
    assert inputs.std() > 1 and last.std() > 1  # real digits in the first and the last input rows
    assert (pixels[4 * CELL + 2:, 4 * CELL + 2:] == 255).all()  # no input 21..24, no reconstruction of them


@pytest.mark.slow
def test_scale_enlarges_each_image_by_nearest_neighbour(checkpoint, tmp_path):
    small = np.asarray(infer(checkpoint, "sample", tmp_path / "s1.png", "--n", "4").convert("L"))
    large = np.asarray(infer(checkpoint, "sample", tmp_path / "s4.png", "--n", "4", "--scale", "4").convert("L"))
    assert small.shape == grid(2, 2)[::-1] and large.shape == grid(2, 2, 4 * 16 + 2)[::-1]
    assert (large[2:2 + 64, 2:2 + 64] == np.kron(small[2:18, 2:18], np.ones((4, 4), dtype=np.uint8))).all()
    assert_one_line_error(run_cli("orchestrator.infer", str(checkpoint), "sample", "--scale", "0"),
                          "--scale must be 1 or more")


@pytest.mark.slow
def test_infer_of_an_experiment_folder_says_where_its_best_checkpoint_is(experiment, tmp_path):
    out = tmp_path / "s.png"
    proc = run_cli("orchestrator.infer", str(experiment), "sample", "--out", str(out))
    assert_one_line_error(proc, "is an experiment, not a checkpoint", f"python -m orchestrator.best {experiment}")
    assert run_cli("orchestrator.best", str(experiment)).returncode == 0
    (rank1,) = (experiment / "best").glob("rank1-*")
    proc = run_cli("orchestrator.infer", str(experiment), "sample", "--out", str(out))
    assert_one_line_error(proc, "is an experiment, not a checkpoint", f"use {rank1}")
    assert not out.exists()
    assert run_cli("orchestrator.infer", str(rank1), "sample", "--out", str(out)).returncode == 0


def test_help_and_docs_say_what_keep_checkpoints_keeps():
    help_text = " ".join(run_cli("orchestrator.sweep", "--help").stdout.split())
    assert "the best K by the objective, plus the latest" in help_text
    options = (Path(__file__).resolve().parents[1] / "docs" / "options.md").read_text()  # the README's table, moved
    assert "| `--no-dashboard` |" in options and "plus the latest" in options
