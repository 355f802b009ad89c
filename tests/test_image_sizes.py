"""Your own images as the source reports had them (issue 17): non-square sizes (--image-size HxW),
train/val/test folders or a seeded split (--heldout-fraction), training-time augmentation
(`augment`, torchvision v2 on the batch), the offline signature-like example, and one non-square
folder end to end: sweep, best, infer and the dashboard in a real headless Chromium."""

import json
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, family_sweep, run_cli
from trainables.augment import AUGMENT_GROUP, augment_batch, augment_policies, background
from trainables.datasets import DatasetError, ImageData, load_dataset
from trainables.datasets.images import decode_images, parse_size
from trainables.errors import BadInput
from trainables.feature_networks import to_float
from trainables.features import Evaluator, get_feature_network
from trainables.models import FAMILIES


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))


def grey(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode="L").save(path)


def strokes(rng, height, width):
    """A white page with a dark horizontal stroke at a random height: a signature, roughly."""
    image = np.full((height, width), 255, np.uint8)
    r = rng.integers(2, height - 4)
    image[r:r + 2, width // 8: 7 * width // 8] = rng.integers(0, 100)
    return image


# --- sizes ---------------------------------------------------------------------------------------

def test_image_sizes_parse_as_n_or_height_by_width():
    assert parse_size(64) == parse_size("64") == (64, 64)
    assert parse_size("64x128") == parse_size("64X128") == parse_size([64, 128]) == (64, 128)
    for bad in ("64x", "x64", "3x64", "64x2000", "64x128x3", "big", 2.5, None, [64, 128, 3]):
        with pytest.raises(DatasetError, match="image s"):
            parse_size(bad)


def test_a_non_square_size_crops_pads_or_stretches_to_height_by_width(tmp_path):
    """A white 100x40 (wide) image with a black block in its left half made 16 high, 32 wide: crop
    keeps the middle at that aspect ratio, pad keeps all of it on the border's colour (white),
    stretch keeps all of it."""
    image = np.full((40, 100), 255, np.uint8)
    image[5:35, :50] = 0
    grey(tmp_path / "wide.png", image)
    files = [tmp_path / "wide.png"]
    for fit in ("crop", "pad", "stretch"):
        x = decode_images(files, "16x32", fit)[0][0, 0]
        assert x.shape == (16, 32)
        assert x[4:11, :14].max() < 30 and x[4:11, 18:].min() > 225, fit  # the black block stays on the left
    padded = decode_images(files, "32x32", "pad")[0][0, 0]  # 100x40 into a square: white bands above and below
    assert padded[:5].min() > 225 and padded[-5:].min() > 225 and padded[16, :12].max() < 30
    cropped = decode_images(files, "32x32", "crop")[0][0, 0]  # the middle 40x40: the block's edge in the middle
    assert cropped[8:24, :12].max() < 30 and cropped[8:24, 20:].min() > 225


def test_non_square_data_gets_a_feature_dataset_of_half_turns_and_mirrors(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(20):
        grey(tmp_path / "sigs" / f"{i}.png", strokes(rng, 16, 32))
    data = load_dataset("image_folder", tmp_path / "sigs", options={"image_size": "16x32"})
    assert data.shape == (1, 16, 32)
    turned = load_dataset(data.feature_dataset, tmp_path / "sigs", options={"image_size": "16x32"})
    assert turned.shape == (1, 16, 32)
    assert turned.classes == ["sigs", "sigs rotated 180", "sigs mirrored left to right", "sigs mirrored top to bottom"]
    n = len(data.train_x)
    x = data.train_x
    for r, expected in enumerate((x, x[:, :, ::-1, ::-1], x[:, :, :, ::-1], x[:, :, ::-1, :])):
        assert (turned.train_x[r * n:(r + 1) * n] == expected).all() and (turned.train_y[r * n:(r + 1) * n] == r).all()


def tiny_data(two_domains: bool) -> ImageData:
    """48 random 16x32 grey images of two classes; with `two_domains`, paired with their mirror images."""
    x = np.random.default_rng(0).integers(0, 256, (48, 1, 16, 32), dtype=np.uint8)
    y = np.arange(48) % 2
    extra = dict(train_a=x[:, :, :, ::-1].copy(), test_a=x[:16, :, :, ::-1].copy(), paired=True,
                 domains=("a", "b")) if two_domains else {}
    return ImageData("tiny", x, y, x[:16], y[:16], ["zero", "one"], "test", **extra)


def test_every_family_trains_and_evaluates_on_non_square_images():
    """Each family on 16x32 images (two-domain ones on 16x32 pairs): a training step, and an
    evaluation whose sample images keep the shape, scored by a feature network of that shape."""
    device = torch.device("cpu")
    for name, family in sorted(FAMILIES.items()):
        hp = {**family.defaults, "batch_size": 8}
        data = family.prepare_data(tiny_data(family.data_kind in ("paired", "unpaired")), hp)
        info = data.info()
        family.check_data(info)
        modules = family.build(hp, info)
        optimizers = family.optimizers(modules, hp)
        batch = {"x": to_float(torch.from_numpy(data.train_x[:8])), "y": torch.from_numpy(data.train_y[:8])}
        if data.train_a is not None:
            batch["a"] = to_float(torch.from_numpy(data.train_a[:8]))
        losses = family.train_step(modules, optimizers, batch, hp)
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in losses.values()), name
        evaluator = Evaluator(data, 16, *get_feature_network(data, log=lambda *_: None), device)
        result = family.evaluate(modules, hp, evaluator, seed=0)
        assert tuple(result.images.shape[2:]) == (16, 32), (name, result.images.shape)
        assert all(np.isfinite(v) for v in result.scores.values()), (name, result.scores)


# --- splits --------------------------------------------------------------------------------------

def split_folder(root, sizes=(("train", 30, 100), ("val", 6, 0), ("test", 8, 255)), classes=None, shape=(16, 32)):
    """train/ val/ test/ of images with one grey value per split (train varies), or with class
    sub-folders when `classes` names them."""
    for split, n, value in sizes:
        for c in classes or [None]:
            folder = root / split / c if c else root / split
            for i in range(n):
                grey(folder / f"{split}{i}.png", np.full(shape, value + (i % 20 if split == "train" else 0)))


def test_train_val_and_test_folders_are_the_splits(tmp_path):
    split_folder(tmp_path / "flat")
    data = load_dataset("image_folder", tmp_path / "flat", options={"image_size": "16x32"})
    assert (len(data.train_x), len(data.val_x), len(data.test_x)) == (30, 6, 8)
    assert (data.val_x == 0).all() and (data.test_x == 255).all() and (data.train_x < 130).all()
    assert data.split == "folders: train = train/, val = val/, test = test/" and data.classes == ["flat"]
    assert data.info()["sizes"] == {"train": 30, "val": 6, "test": 8}
    trial_view = data.evaluated_on_val()  # what a sweep's trials evaluate on
    assert (trial_view.test_x == 0).all() and len(trial_view.test_y) == 6 and trial_view.val_x is None
    assert "evaluated on val" in trial_view.split

    split_folder(tmp_path / "classes", classes=["alice", "bob"])
    (tmp_path / "classes" / "val").rename(tmp_path / "classes" / "valid")  # valid/ as some datasets name it
    data = load_dataset("image_folder", tmp_path / "classes", options={"image_size": "16x32"})
    assert data.classes == ["alice", "bob"] and sorted(set(data.val_y.tolist())) == [0, 1]
    assert "val = valid/" in data.split and (data.val_x == 0).all()

    split_folder(tmp_path / "no_val", sizes=(("train", 10, 100), ("test", 4, 255)))
    data = load_dataset("image_folder", tmp_path / "no_val", options={"image_size": 16})
    assert data.val_x is None and (data.test_x == 255).all() and data.evaluated_on_val() is data

    with pytest.raises(DatasetError, match="has split folders .*--heldout-fraction applies only to folders without"):
        load_dataset("image_folder", tmp_path / "flat", options={"heldout_fraction": 0.2})

    split_folder(tmp_path / "odd", classes=["alice"])
    grey(tmp_path / "odd" / "test" / "carol" / "0.png", np.zeros((16, 32)))
    with pytest.raises(DatasetError, match="class 'carol', which train/ lacks"):
        load_dataset("image_folder", tmp_path / "odd", options={"image_size": 16})


def test_without_split_folders_a_seeded_share_is_held_out(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(50):
        grey(tmp_path / "sigs" / f"{i:02d}.png", strokes(rng, 16, 32))
    default = load_dataset("image_folder", tmp_path / "sigs", options={"image_size": "16x32"})
    assert len(default.test_x) == 5 and default.split == "seeded: 10% held out (seed 0)"
    a = load_dataset("image_folder", tmp_path / "sigs", options={"image_size": "16x32", "heldout_fraction": 0.3})
    b = load_dataset("image_folder", tmp_path / "sigs", options={"image_size": "16x32", "heldout_fraction": 0.3})
    assert len(a.test_x) == 15 and (a.test_x == b.test_x).all() and a.split == "seeded: 30% held out (seed 0)"
    for bad in (0, 1, 1.5, -0.1, "half"):
        with pytest.raises(DatasetError, match="--heldout-fraction"):
            load_dataset("image_folder", tmp_path / "sigs", options={"heldout_fraction": bad})
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "image_folder", "--data-root", str(tmp_path / "sigs"),
                   "--heldout-fraction", "1.5", "--storage", str(tmp_path / "store"), timeout=60)
    assert_one_line_error(proc, "--heldout-fraction")
    assert not (tmp_path / "store").exists()


def test_side_by_side_pairs_in_train_val_test_folders(tmp_path):
    for split, n, value in (("train", 10, 60), ("val", 3, 0), ("test", 4, 200)):
        for i in range(n):
            pair = np.concatenate([np.full((16, 32), value // 2), np.full((16, 32), value)], axis=1)
            grey(tmp_path / "p2p" / split / f"{i}.png", pair)
    data = load_dataset("paired_folders", tmp_path / "p2p", options={"image_size": "16x32"})
    assert data.shape == (1, 16, 32) and (len(data.train_x), len(data.val_x), len(data.test_x)) == (10, 3, 4)
    assert (data.val_x == 0).all() and (data.test_x == 200).all() and (data.val_a == 0).all()
    assert (data.test_a == 100).all()
    view = data.evaluated_on_val()
    assert (view.test_a == 0).all() and (view.test_x == 0).all()


# --- augmentation --------------------------------------------------------------------------------

def fashion_batch(n=64):
    data = load_dataset("fashion_mnist")
    return to_float(torch.from_numpy(data.train_x[:n]))


def test_augment_policies_are_checked_and_every_family_defaults_to_none():
    assert augment_policies("none") == [] and augment_policies("flip+rotate") == ["flip", "rotate"]
    with pytest.raises(BadInput, match=re.escape("augment 'flip+zoom': unknown 'zoom'")):
        augment_policies("flip+zoom")
    assert all(family.defaults["augment"] == "none" for family in FAMILIES.values())


def test_each_augmentation_on_a_real_batch():
    data = load_dataset("fashion_mnist")
    x = to_float(torch.from_numpy(data.train_x[:64]))
    torch.manual_seed(0)
    assert augment_batch({"x": x}, "none", False)["x"] is x

    def groups(out):
        return list(zip(x.split(AUGMENT_GROUP), out.split(AUGMENT_GROUP)))

    flipped = augment_batch({"x": x}, "flip", False)["x"]
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for i, o in groups(flipped))  # itself or its mirror
    torch.manual_seed(1)
    unchanged = [torch.equal(o, i) for _ in range(5) for i, o in groups(augment_batch({"x": x}, "flip", False)["x"])]
    assert set(unchanged) == {True, False}  # some groups flipped and some not: a draw per group

    rotated = augment_batch({"x": x}, "rotate", False, {"x": background(data.train_x)})["x"]
    assert rotated.shape == x.shape and not torch.equal(rotated, x)
    assert rotated[:, :, 0, 0].max() < -0.9  # corners filled with the background (black), not grey
    paper = augment_batch({"x": -x}, "rotate", False, {"x": background(255 - data.train_x)})["x"]
    corners = paper[:, :, 0, 0]  # dark on white: the uncovered corners are the paper's white, not black
    assert corners.min() > 0.5 and corners.median() > 0.85
    ink = (x + 1).sum((1, 2, 3))
    assert torch.allclose((rotated + 1).sum((1, 2, 3)), ink, rtol=0.25)  # turned, not erased

    jittered = augment_batch({"x": x}, "jitter", False)["x"]
    assert jittered.shape == x.shape and not torch.equal(jittered, x)
    assert jittered.min() >= -1 and jittered.max() <= 1
    means = [(o.mean() - i.mean()).abs().item() for i, o in groups(jittered)]
    assert max(means) > 0.01  # brightness or contrast moved

    cropped = augment_batch({"x": x}, "crop", False)["x"]
    assert cropped.shape == x.shape and not torch.equal(cropped, x)

    everything = augment_batch({"x": x}, "flip+rotate+jitter+crop", False)["x"]
    assert everything.shape == x.shape and torch.isfinite(everything).all()


def test_paired_images_take_the_same_draw_and_unpaired_ones_their_own():
    x = fashion_batch(32)
    torch.manual_seed(0)
    paired = augment_batch({"x": x, "a": x.clone()}, "flip+rotate+crop", True)
    assert torch.equal(paired["x"], paired["a"])  # the sketch and its image move together
    torch.manual_seed(0)
    sketched = augment_batch({"x": x, "a": -x}, "rotate", True, {"x": 0.0, "a": 1.0})  # white sketch paper
    assert sketched["x"][:, :, 0, 0].max() < -0.9 and sketched["a"][:, :, 0, 0].min() > 0.9  # each its own fill
    grey_rgb = augment_batch({"x": x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last), "a": x},
                             "flip+rotate+jitter+crop", True)
    assert grey_rgb["x"].shape == (32, 3, 28, 28) and grey_rgb["a"].shape == (32, 1, 28, 28)
    assert grey_rgb["x"].is_contiguous(memory_format=torch.channels_last)  # each keeps its memory layout
    torch.manual_seed(0)
    unpaired = augment_batch({"x": x, "a": x.clone()}, "flip+rotate+crop", False)
    assert not torch.equal(unpaired["x"], unpaired["a"])
    wide = torch.rand(16, 1, 16, 32) * 2 - 1
    assert augment_batch({"x": wide}, "flip+rotate+jitter+crop", False)["x"].shape == (16, 1, 16, 32)


def test_an_unknown_augment_is_refused_before_ray_starts(tmp_path):
    for extra in (["--set", "augment=zoom"], ["--space", str(tmp_path / "space.toml")]):
        (tmp_path / "space.toml").write_text('[augment]\ndistribution = "choice"\nvalues = ["none", "flip+zoom"]\n')
        start = time.monotonic()
        proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", *extra, "--storage",
                       str(tmp_path / "store"), timeout=60)
        assert time.monotonic() - start < 20
        assert_one_line_error(proc, "unknown 'zoom'")
        assert not (tmp_path / "store").exists()


# --- the example, and a non-square folder end to end ---------------------------------------------

def test_the_signature_like_example_builds_offline(tmp_path):
    proc = run_cli("trainables.datasets.example_folder", str(tmp_path / "pairs"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = load_dataset("image_folder", tmp_path / "pairs", options={"image_size": "32x64"})
    assert data.shape == (1, 32, 64) and (len(data.train_x), len(data.val_x), len(data.test_x)) == (500, 100, 100)
    assert np.median(data.train_x[:, 0, 0, :]) == 255  # dark on white paper
    pixels = lambda x: {im.tobytes() for im in x}  # noqa: E731
    assert not pixels(data.val_x) & pixels(data.test_x)  # val and test share no image
    again = run_cli("trainables.datasets.example_folder", str(tmp_path / "pairs"), timeout=60)
    assert again.returncode == 2 and "not empty" in again.stderr


def cell(grid: np.ndarray, row: int, col: int, height: int, width: int) -> np.ndarray:
    """One image of a torchvision grid (padding 2)."""
    top, left = 2 + row * (height + 2), 2 + col * (width + 2)
    return grid[top:top + height, left:left + width]


@pytest.mark.slow
def test_a_non_square_folder_end_to_end(ray_address, tmp_path):
    """A 16x32 folder with train/ val/ test/: the sweep's trials are scored on val (a VAE's
    samples.png shows held-out images: val's are black), infer's held-out default is test (white),
    best exports the checkpoint, and the dashboard shows the non-square grids unsquashed."""
    rng = np.random.default_rng(0)
    for i in range(120):
        grey(tmp_path / "sigs" / "train" / f"{i:03d}.png", strokes(rng, 16, 32))
    for i in range(10):
        grey(tmp_path / "sigs" / "val" / f"{i}.png", np.zeros((16, 32)))
        grey(tmp_path / "sigs" / "test" / f"{i}.png", np.full((16, 32), 255))
    space = tmp_path / "space.toml"
    space.write_text('arch = "conv"\nwidth = 8\nlatent_dim = 4\nbatch_size = 32\n'
                     '[augment]\ndistribution = "choice"\nvalues = ["rotate+jitter", "crop"]\n')
    exp = family_sweep(ray_address, tmp_path / "store", "vae", "--dataset", "image_folder", "--data-root",
                       str(tmp_path / "sigs"), "--image-size", "16x32", "--space", str(space),
                       # 10 held-out images are too few for the feature check; rotation features train in a second
                       "--fid-features", "rotation", "--skip-feature-check", max_steps=20, eval_every=20)
    spec = json.loads((exp / "sweep.json").read_text())
    assert spec["data_options"] == {"image_size": "16x32"} and spec["dataset_info"]["shape"] == [1, 16, 32]
    assert spec["dataset_info"]["split"].startswith("folders: train = train/, val = val/")
    checkpoints = sorted(exp.glob("checkpoints/*/checkpoint_*"))
    assert checkpoints
    config = json.loads((checkpoints[0] / "config.json").read_text())
    assert config["hp"]["augment"] in ("rotate+jitter", "crop") and config["shape"] == [1, 16, 32]
    samples = np.asarray(Image.open(checkpoints[0] / "samples.png").convert("L"))
    # the VAE's grid: min(48, evaluated images) samples, 8 held-out images, their reconstructions;
    # 8 images of 16 x 32 per row. Scored on val's 10 images: 10 samples, then the held-out ones
    assert samples.shape == (2 + 4 * 18, 2 + 8 * 34)
    held_out = [cell(samples, k // 8, k % 8, 16, 32) for k in range(10, 18)]
    assert all(c.max() < 30 for c in held_out)  # val's black images, not test's white ones

    proc = run_cli("orchestrator.best", str(exp), timeout=120)
    assert proc.returncode == 0, proc.stderr
    best = next((exp / "best").glob("rank1-*"))
    out = tmp_path / "reconstruct.png"
    proc = run_cli("orchestrator.infer", str(best), "reconstruct", "--data-root", str(tmp_path / "sigs"), "--n", "8",
                   "--device", "cpu", "--out", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    grid = np.asarray(Image.open(out).convert("L"))
    assert all(cell(grid, 0, c, 16, 32).min() > 225 for c in range(8))  # the inputs: test's white images
    proc = run_cli("orchestrator.infer", str(best), "sample", "--n", "8", "--device", "cpu",
                   "--out", str(tmp_path / "s.png"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    columns, rows = ((n - 2) // step for n, step in zip(Image.open(tmp_path / "s.png").size, (34, 18)))
    assert (Image.open(tmp_path / "s.png").size, columns * rows >= 8) == ((2 + 34 * columns, 2 + 18 * rows), True)

    from test_dashboard import _browser

    from dashboards.build import build

    page = build([exp], tmp_path / "dash.html")
    assert "split folders: train = train/, val = val/, test = test/: 120 train, 10 val, 10 test images" in page.read_text()
    driver = _browser()
    try:
        driver.get(page.as_uri())
        start = time.time()
        while not driver.execute_script("return window.dashboardReady === true"):
            assert time.time() - start < 90
            time.sleep(0.1)
        shapes = driver.execute_script("""return Array.from(document.images).map(function (i) {
            return [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width, i.getBoundingClientRect().height]; });""")
        assert shapes and any(w > h for w, h, _, _ in shapes)  # grids of wide images
        for natural_w, natural_h, shown_w, shown_h in shapes:
            if shown_h:  # shown at the grid's own aspect ratio, not squashed into squares
                assert abs(shown_w / shown_h - natural_w / natural_h) < 0.05 * natural_w / natural_h
    finally:
        driver.quit()
