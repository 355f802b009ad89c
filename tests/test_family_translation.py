"""The image-translation families on a real local Ray cluster: sketch2image (paired sketch -> image)
and cyclegan (unpaired, both directions, trained by two DDP workers per trial), on the tiny
digits_edges data with tiny fixed network sizes; translation from their best checkpoints."""

import math

import pytest
from PIL import Image, ImageDraw

from conftest import assert_one_line_error, family_sweep, run_cli
from trainables.experiment import load_experiment

pytestmark = pytest.mark.slow

STEPS, EVAL_EVERY = 40, 20
CELL = 16 + 2  # a 16x16 digit and save_image's 2px padding

# small fixed sizes; a learning-rate range is the one thing searched
SPACES = {
    "sketch2image": """
width = 8
width_d = 8
latent_dim = 32
batch_size = 32
lr_d = 5e-4
[lr_g]
distribution = "loguniform"
low = 1e-3
high = 3e-3
""",
    "cyclegan": """
width = 8
n_blocks = 1
width_d = 8
pool_size = 10
batch_size = 16
lr_d = 5e-4
[lr_g]
distribution = "loguniform"
low = 5e-4
high = 2e-3
""",
}


def translation_sweep(ray_address, tmp_path_factory, model: str, *args: str, trials: int = 2):
    storage = tmp_path_factory.mktemp(model)
    space = storage / "space.toml"
    space.write_text(SPACES[model])
    return family_sweep(ray_address, storage, model, "--dataset", "digits_edges", "--space", str(space),
                        "--seed", "1", "--no-dashboard", *args, trials=trials, max_steps=STEPS,
                        eval_every=EVAL_EVERY)


@pytest.fixture(scope="module")
def sketch2image_sweep(ray_address, tmp_path_factory):
    return translation_sweep(ray_address, tmp_path_factory, "sketch2image")  # in-process: cyclegan covers DDP


@pytest.fixture(scope="module")
def cyclegan_sweep(ray_address, tmp_path_factory):
    return translation_sweep(ray_address, tmp_path_factory, "cyclegan", "--workers-per-trial", "2",
                             "--cpus-per-worker", "0.5", trials=1)


def best_trial(path, trials: int = 2):
    """The best checkpoint and its trial, after checking that every trial ran to the end."""
    exp = load_experiment(path)
    assert len(exp.trials) == trials
    for trial in exp.trials:
        assert trial.status(STEPS) == "finished"
        assert trial.results[0]["step"] == 0  # the untrained model's report
    trial, best = exp.ranked_checkpoints()[0]
    assert math.isfinite(best.metrics["fid"]) and best.metrics["fid"] > 0
    return trial, best


def image_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def infer(*args: str) -> None:
    proc = run_cli("orchestrator.infer", *args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_sketch2image_learns_and_translates_sketches(sketch2image_sweep, tmp_path):
    trial, best = best_trial(sketch2image_sweep)
    untrained = trial.results[0]
    assert best.metrics["fid"] < untrained["fid"]
    assert best.metrics["l1"] < untrained["l1"] and best.metrics["ssim"] > untrained["ssim"]
    # samples.png: 4 blocks of rows sketch, translation, true image, 8 images a row
    assert image_size(best.path / "samples.png") == (8 * CELL + 2, 12 * CELL + 2)

    infer(str(best.path), "translate", "--n", "8", "--out", str(tmp_path / "held_out.png"))
    assert image_size(tmp_path / "held_out.png") == (8 * CELL + 2, 2 * CELL + 2)  # sketches, images

    sketch = Image.new("L", (16, 16), 255)  # a user's sketch: black strokes on white
    ImageDraw.Draw(sketch).rectangle((4, 2, 11, 13), outline=0)
    sketch.save(tmp_path / "sketch.png")
    infer(str(best.path), "translate", "--input", str(tmp_path / "sketch.png"), "--out", str(tmp_path / "mine.png"))
    assert image_size(tmp_path / "mine.png") == (CELL + 2, 2 * CELL + 2)


def test_cyclegan_with_two_ddp_workers_learns_both_directions(cyclegan_sweep, tmp_path):
    trial, best = best_trial(cyclegan_sweep, trials=1)
    untrained, scores = trial.results[0], best.metrics
    assert all(math.isfinite(scores[k]) for k in ("fid_a2b", "fid_b2a", "kid", "cycle_l1", "l1", "l1_b2a"))
    assert scores["fid"] == pytest.approx((scores["fid_a2b"] + scores["fid_b2a"]) / 2)
    assert scores["fid"] < untrained["fid"] and scores["cycle_l1"] < untrained["cycle_l1"]
    # samples.png: for each direction 2 blocks of rows input, translation, translated back
    assert image_size(best.path / "samples.png") == (8 * CELL + 2, 12 * CELL + 2)

    infer(str(best.path), "translate", "--n", "8", "--direction", "b2a", "--out", str(tmp_path / "b2a.png"))
    assert image_size(tmp_path / "b2a.png") == (8 * CELL + 2, 3 * CELL + 2)  # images, sketches, images again


def test_sketch2image_refuses_unpaired_data(tmp_path):
    proc = run_cli("orchestrator.sweep", "sketch2image", "--dataset", "sneaker2boot", "--trials", "1",
                   "--storage", str(tmp_path))
    assert_one_line_error(proc, "paired")
