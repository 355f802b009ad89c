"""Bad input at the command line: one line on stderr, exit code 2, no traceback, and nothing that
was already written is lost. One real tiny sweep gives a real experiment and checkpoint; the
commands run in-process (the same `trainables.cli.run` as `python -m`) except where the real
process matters (how fast an unreachable cluster is given up on)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

from conftest import assert_one_line_error, free_port, run_cli
from orchestrator import best, infer, rescore, sweep
from trainables.cli import run
from trainables.experiment import load_experiment

def best_checkpoint(experiment: Path) -> Path:
    return load_experiment(experiment).ranked_checkpoints()[0][1].path


def cli(capsys, main, *argv: str) -> subprocess.CompletedProcess:
    """A command line run in this process, as `python -m` runs it (warnings off, as run_cli)."""
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exited:
        warnings.simplefilter("ignore")
        run(main, list(argv))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), exited.value.code, out, err)


def hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links not followed) and its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture()
def experiment(tiny_experiment) -> Path:
    return tiny_experiment


@pytest.fixture()
def checkpoint(experiment, tmp_path) -> Path:
    """A copy of the experiment's best checkpoint, for a test to damage."""
    return Path(shutil.copytree(best_checkpoint(experiment), tmp_path / "ckpt"))


# --- sweeps -------------------------------------------------------------------------------------

def test_unwritable_storage_is_refused_before_anything_is_read(capsys, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    proc = cli(capsys, sweep.main, "dcgan", "--dataset", "digits", "--storage", str(a_file / "sub"))
    assert_one_line_error(proc, "is a file, not a folder", "choose another --storage")
    assert a_file.read_text() == "not a folder"
    # root writes through any permission bits, never into /proc
    proc = cli(capsys, sweep.main, "dcgan", "--dataset", "digits", "--storage", "/proc/gen-orchestrator-test")
    assert_one_line_error(proc, "/proc is not writable", "choose another --storage")


def test_unreachable_address_fails_fast_and_writes_nothing(tmp_path):
    port = free_port()
    start = time.monotonic()
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--storage", str(tmp_path / "exp"),
                   "--name", "x", "--address", f"127.0.0.1:{port}", timeout=120)
    assert time.monotonic() - start < 60
    assert_one_line_error(proc, f"cannot reach Ray at 127.0.0.1:{port}", "ray start --head")
    assert not (tmp_path / "exp").exists()  # no half-made experiment blocks a second try under the same name


@pytest.mark.parametrize("address, fragment", [
    ("nonsense", "is not auto or HOST:PORT"),
    ("127.0.0.1:99999", "is not auto or HOST:PORT"),
    ("no-such-host.invalid:6379", "cannot reach Ray at no-such-host.invalid:6379"),
])
def test_malformed_addresses_are_refused(capsys, tmp_path, address, fragment):
    proc = cli(capsys, sweep.main, "dcgan", "--dataset", "digits", "--storage", str(tmp_path), "--address", address)
    assert_one_line_error(proc, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("features, fragment", [
    ("nonsense", "'nonsense' is none of auto, classifier"),
    ("missing.safetensors", "no such weights file: missing.safetensors"),
])
def test_unknown_feature_spaces_are_refused(capsys, tmp_path, features, fragment):
    proc = cli(capsys, sweep.main, "dcgan", "--dataset", "digits", "--storage", str(tmp_path), "--fid-features", features)
    assert_one_line_error(proc, "--fid-features", fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model, setting, fragment", [
    ("dcgan", "batch_size=0", "dcgan: batch_size = 0 is out of range: it must be a whole number >= 2"),
    ("dcgan", "lr_g=-1", "dcgan: lr_g = -1 is out of range: it must be a number > 0"),
    ("dcgan", "beta1=1.5", "beta1 = 1.5 is out of range: it must be a number in [0, 1)"),
    ("cyclegan", "lambda_cycle=-2", "lambda_cycle = -2 is out of range"),
    ("ddpm", "eval_sample_share=0", "eval_sample_share = 0 is out of range: it must be a number in (0, 1]"),
])
def test_values_out_of_range_are_refused_before_ray_starts(capsys, tmp_path, model, setting, fragment):
    """Values that would fail inside every trial (a batch of 0 images, a negative rate) are refused
    in one line before Ray starts, from --set and from a search space alike."""
    start = time.monotonic()
    proc = cli(capsys, sweep.main, model, "--quick", "--set", setting, "--storage", str(tmp_path))
    assert_one_line_error(proc, fragment)
    assert time.monotonic() - start < 30 and list(tmp_path.iterdir()) == []
    space = tmp_path.parent / f"{tmp_path.name}-space.toml"
    space.write_text('[lr_g]\ndistribution = "uniform"\nlow = -0.001\nhigh = 0.001\n')
    proc = cli(capsys, sweep.main, "dcgan", "--quick", "--space", str(space), "--storage", str(tmp_path))
    assert_one_line_error(proc, "dcgan: lr_g searched over [-0.001, 0.001] leaves its range: it must be a number > 0")
    space.write_text('[batch_size]\ndistribution = "choice"\nvalues = [64, 1]\n')
    proc = cli(capsys, sweep.main, "dcgan", "--quick", "--space", str(space), "--storage", str(tmp_path))
    assert_one_line_error(proc, "dcgan: batch_size = 1 is out of range")


def test_every_shipped_space_and_default_is_within_bounds():
    from search_spaces import read_space
    from trainables.family import check_bounds, check_searched_bounds
    from trainables.models import all_families, get_family

    for name in all_families():
        check_bounds(get_family(name), get_family(name).defaults)
    spaces = sorted((Path(sweep.__file__).resolve().parents[1] / "search_spaces").glob("*.toml"))
    assert len(spaces) >= len(all_families())
    for path in spaces:
        family = get_family({"signatures": "dcgan", "ddpm_steps": "ddpm"}.get(path.stem, path.stem))
        for key, table in read_space(path.read_text(), set(family.defaults), str(path), {}).items():
            if not isinstance(table, dict):
                check_bounds(family, {key: table})
            elif table["distribution"] == "choice":
                for value in table["values"]:
                    check_bounds(family, {key: value})
            else:
                check_searched_bounds(family, key, table)


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "."])
def test_name_must_be_one_folder(capsys, tmp_path, name):
    proc = cli(capsys, sweep.main, "dcgan", "--dataset", "digits", "--storage", str(tmp_path / "s"), "--name", name)
    assert_one_line_error(proc, "must be a plain folder name")
    assert list(tmp_path.iterdir()) == []


def test_data_root_in_the_wrong_format(capsys, tmp_path):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"not an idx file")
    proc = cli(capsys, sweep.main, "dcgan", "--data-root", str(tmp_path), "--storage", str(tmp_path / "exp"))
    assert_one_line_error(proc, "is not a readable idx file")
    assert not (tmp_path / "exp").exists()


def test_bad_commands_leave_an_experiment_byte_for_byte_intact(capsys, experiment, tmp_path):
    """Refused --resume (other family, broken options, unreachable cluster), a new sweep over an
    existing name, broken search spaces: the experiment's files are all still there, unchanged."""
    storage, name = str(experiment.parent), experiment.name
    before = hashes(experiment)
    space = tmp_path / "space.toml"
    space.write_text('[lr_g]\ndistribution = "uniform"\nlow = 1\nhigh = 1\n')
    attempts = [
        (["vae", "--resume", "--name", name, "--storage", storage], "is a dcgan sweep, not vae"),
        (["dcgan", "--resume", "--name", name, "--storage", storage, "--trials", "0"], "--trials: must be 1 or more"),
        (["dcgan", "--resume", "--name", name, "--storage", storage, "--address", f"127.0.0.1:{free_port()}"],
         "cannot reach Ray"),
        (["dcgan", "--name", name, "--storage", storage, "--dataset", "digits"], "already exists; pass --resume"),
        (["dcgan", "--name", name, "--storage", storage, "--space", str(space)], "empty range"),
        (["dcgan", "--name", name, "--storage", storage, "--set", "nosuch=1"], "--set nosuch: unknown hyperparameter"),
        (["nosuchmodel", "--name", name, "--storage", storage], "unknown model 'nosuchmodel'"),
    ]
    for argv, fragment in attempts:
        assert_one_line_error(cli(capsys, sweep.main, *argv), fragment)
    assert hashes(experiment) == before


@pytest.mark.parametrize("content, fragment", [
    ("{truncated", "nothing to resume"),
    ("[1, 2]", "incomplete or not this project's"),
    ('{"model": "dcgan"}', "incomplete or not this project's"),
])
def test_resume_of_a_damaged_sweep_json(capsys, experiment, tmp_path, content, fragment):
    copy = Path(shutil.copytree(experiment, tmp_path / "copy"))
    (copy / "sweep.json").write_text(content)
    before = hashes(copy)
    proc = cli(capsys, sweep.main, "dcgan", "--resume", "--name", "copy", "--storage", str(tmp_path))
    assert_one_line_error(proc, fragment)
    assert hashes(copy) == before


# --- checkpoints --------------------------------------------------------------------------------

def damage(checkpoint: Path, how: str) -> None:
    weights, config = checkpoint / "model.safetensors", checkpoint / "config.json"
    if how == "no weights":
        weights.unlink()
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "empty weights":
        weights.write_bytes(b"")
    elif how == "no config":
        config.unlink()
    elif how == "truncated config":
        config.write_text(config.read_text()[:40])
    else:  # config.json edited: another family, an unknown one, nonsense hyperparameters or shape
        edits = {"other family": {"model": "vae"}, "unknown family": {"model": "stylegan9"},
                 "bad hyperparameters": {"hp": {"latent_dim": "many"}}, "bad shape": {"data": {"shape": [1, -16]}},
                 "hp not a table": {"hp": [1, 2]}}[how]
        config.write_text(json.dumps({**json.loads(config.read_text()), **edits}))


@pytest.mark.parametrize("how, fragment", [
    ("no weights", "model.safetensors is missing"),
    ("truncated weights", "model.safetensors is damaged"),
    ("empty weights", "model.safetensors is damaged"),
    ("no config", "config.json is missing"),
    ("truncated config", "config.json is not readable JSON"),
    ("other family", "model.safetensors does not fit its config.json"),
    ("unknown family", "unknown model 'stylegan9'"),
    ("bad hyperparameters", "don't build a dcgan model"),
    ("bad shape", "does not describe the training images"),
    ("hp not a table", "lacks 'hp'"),
])
def test_damaged_or_foreign_checkpoints(capsys, checkpoint, tmp_path, how, fragment):
    damage(checkpoint, how)
    out = tmp_path / "out.png"
    proc = cli(capsys, infer.main, str(checkpoint), "sample", "--n", "4", "--device", "cpu", "--out", str(out))
    assert_one_line_error(proc, fragment)
    assert not out.exists()


def test_a_truncated_checkpoint_through_the_real_command(checkpoint, tmp_path):
    damage(checkpoint, "truncated weights")
    proc = run_cli("orchestrator.infer", str(checkpoint), "sample", "--device", "cpu", "--out", str(tmp_path / "o.png"))
    assert_one_line_error(proc, "model.safetensors is damaged")


def test_a_mode_of_another_family(capsys, checkpoint, tmp_path):
    proc = cli(capsys, infer.main, str(checkpoint), "translate", "--device", "cpu", "--out", str(tmp_path / "t.png"))
    assert_one_line_error(proc, "dcgan checkpoints support", "not translate")
    assert not (tmp_path / "t.png").exists()


def test_unwritable_outputs(capsys, experiment, checkpoint, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    proc = cli(capsys, infer.main, str(checkpoint), "sample", "--device", "cpu", "--out", str(a_file / "x.png"))
    assert_one_line_error(proc, "does not exist; create it or choose another --out")
    proc = cli(capsys, infer.main, str(checkpoint), "sample", "--device", "cpu", "--out", str(tmp_path))
    assert_one_line_error(proc, "is a folder")
    proc = cli(capsys, best.main, str(experiment), "--dst", str(a_file / "best"))
    assert_one_line_error(proc, "cannot create --dst")
    assert a_file.read_text() == "keep me"


def write_image(path: Path, size: tuple[int, int], mode: str) -> Path:
    Image.new(mode, size, 128 if mode == "L" else (128, 64, 32)).save(path)
    return path


@pytest.mark.parametrize("size, mode, fragment", [
    ((20, 20), "L", "is 20x20 with 1 channel(s); the model takes 16x16 with 1 (pass --resize"),
    ((16, 16), "RGB", "is 16x16 with 3 channel(s); the model takes 16x16 with 1"),
    ((16, 8), "RGBA", "is 16x8 with 3 channel(s)"),
])
def test_images_of_the_wrong_size_or_channels(capsys, checkpoint, tmp_path, size, mode, fragment):
    image = write_image(tmp_path / "in.png", size, mode)
    out = tmp_path / "out.png"
    proc = cli(capsys, infer.main, str(checkpoint), "interpolate", "--input", str(image), str(image),
               "--device", "cpu", "--out", str(out))
    assert_one_line_error(proc, fragment)
    assert not out.exists()
    # --resize converts them instead
    proc = cli(capsys, infer.main, str(checkpoint), "interpolate", "--input", str(image), str(image), "--resize",
               "--steps", "3", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def test_input_that_is_not_an_image(capsys, checkpoint, tmp_path):
    (tmp_path / "fake.png").write_text("not a png")
    proc = cli(capsys, infer.main, str(checkpoint), "interpolate", "--input", str(tmp_path / "fake.png"),
               "--device", "cpu", "--out", str(tmp_path / "o.png"))
    assert_one_line_error(proc, "fake.png is not a readable image")
    proc = cli(capsys, infer.main, str(checkpoint), "interpolate", "--input", str(tmp_path / "missing.png"),
               "--device", "cpu", "--out", str(tmp_path / "o.png"))
    assert_one_line_error(proc, "missing.png does not exist")


def test_images_a_family_cannot_take_are_refused_before_ray_starts(monkeypatch, tmp_path):
    """dcgan's convs halve the side twice: a folder of 30x30 icons fails its check_data in one
    line, before Ray starts or the experiment is written, not in every trial of the sweep."""
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    icons = tmp_path / "icons"
    icons.mkdir()
    for i in range(4):
        write_image(icons / f"{i}.png", (30, 30), "RGB")
    storage = tmp_path / "storage"
    for size, shown in (("30", "30x30"), ("32x30", "32x30"), ("30x64", "30x64")):
        start = time.monotonic()
        proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "image_folder", "--data-root", str(icons),
                       "--image-size", size, "--storage", str(storage), timeout=60)
        assert time.monotonic() - start < 15
        assert_one_line_error(proc, f"dcgan needs image sides divisible by 4 (its stride product), got {shown}")
        assert "Ray dashboard" not in proc.stdout and "experiment" not in proc.stdout
        assert not storage.exists()
    for size in ("64x", "3x64", "64x2000", "64x128x3", "big"):  # refused by the option itself
        proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "image_folder", "--data-root", str(icons),
                       "--image-size", size, "--storage", str(storage), timeout=60)
        assert_one_line_error(proc, "--image-size")
        assert not storage.exists()


# --- what the second hour hit (issue 30 items 3 and 4) ---------------------------------------------

def test_a_device_the_machine_lacks_is_one_line(capsys, checkpoint, tmp_path):
    import torch

    proc = cli(capsys, infer.main, str(checkpoint), "sample", "--device", "tpu", "--out", str(tmp_path / "a.png"))
    assert_one_line_error(proc, "--device", "'tpu' is not a device; use cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        proc = cli(capsys, infer.main, str(checkpoint), "sample", "--device", "cuda", "--out", str(tmp_path / "a.png"))
        assert_one_line_error(proc, "--device", "cuda: this machine has no CUDA GPU; use --device cpu")
    assert not (tmp_path / "a.png").exists()


def test_labels_for_a_family_without_them_are_refused(capsys, checkpoint, tmp_path):
    proc = cli(capsys, infer.main, str(checkpoint), "sample", "--labels", "3", "--out", str(tmp_path / "a.png"))
    assert_one_line_error(proc, "--labels: dcgan samples take no labels")
    assert not (tmp_path / "a.png").exists()


def test_an_mlflow_uri_mlflow_would_refuse_is_refused_before_the_export(capsys, experiment, tmp_path):
    pytest.importorskip("mlflow")
    copy = Path(shutil.copytree(experiment, tmp_path / "exp"))
    before = hashes(copy)
    proc = cli(capsys, best.main, str(copy), "--register-mlflow", "not-a-uri", "--model-name", "x")
    assert_one_line_error(proc, "MLflow URI 'not-a-uri'", "sqlite:///FILE")
    assert hashes(copy) == before and not (copy / "best").exists()


def test_rescore_gives_up_on_an_address_where_nothing_listens(capsys, experiment):
    port = free_port()
    start = time.monotonic()
    proc = cli(capsys, rescore.main, str(experiment), "--address", f"127.0.0.1:{port}")
    assert_one_line_error(proc, f"cannot reach Ray at 127.0.0.1:{port}")
    assert time.monotonic() - start < 15


@pytest.mark.parametrize("storage", ["s3://", "s3:///", "gs://"])
def test_storage_that_names_no_bucket_says_so(capsys, storage):
    proc = cli(capsys, sweep.main, "dcgan", "--dataset", "digits", "--storage", storage)
    assert_one_line_error(proc, f"storage {storage!r} names no bucket", "://BUCKET[/PREFIX]")


@pytest.mark.parametrize("command", ["orchestrator.best", "dashboards.build"])
def test_readers_of_unreachable_storage_give_up_in_one_line(command):
    """Without a network to GCS (CI has none) its client retries for minutes, silent: best and the
    dashboard bound their probe as the sweep does (issue 30 item 3: 60 and 150 s of nothing), by
    $ORCHESTRATOR_REACH_SECONDS where it is set (10 s where not)."""
    start = time.monotonic()
    proc = run_cli(command, "gs://no-such-bucket-gen-orchestrator/exp", timeout=120,
                   env={"ORCHESTRATOR_REACH_SECONDS": "2"})
    assert_one_line_error(proc, "gs://no-such-bucket-gen-orchestrator/exp")
    assert time.monotonic() - start < 20
