"""The FID paper's disturbance tests (trainables.feature_checks, bench/metric_validity.py) on one
labeled and one unlabeled dataset, the judge that fails a sequence that does not rise, and the
sweep's check before Ray starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from trainables.datasets import load_dataset
from trainables.feature_checks import (LEVELS, MODE_SHARES, Verdict, checked_feature_network, disturb,
                                       disturbance_readings, full_check, reference_split)
from trainables.feature_networks import FeatureExtractor, to_float
from trainables.features import SampleQuality, build_feature_network, feature_network
from trainables.models import get_family


def untrained_fid(name: str, data, state, meta, n: int) -> float:
    from trainables.features import Evaluator

    family = get_family(name)
    torch.manual_seed(0)
    modules = {k: m.eval() for k, m in family.build(dict(family.defaults), data.info()).items()}
    return family.evaluate(modules, dict(family.defaults), Evaluator(data, n, state, meta, torch.device("cpu")), 1234).scores["fid"]


def checked(data, kind: str, families: tuple[str, ...], root=None, options=None) -> Verdict:
    held_out = data.evaluated_on_val()
    n = min(1000, len(held_out.test_x))
    state, meta = feature_network(kind, data, data_root=root, data_options=options)
    network = build_feature_network(state, meta)
    quality = SampleQuality(network, held_out.test_x[:n], torch.device("cpu"))
    pool = to_float(torch.from_numpy(data.train_x[:4 * n]))
    labels = data.train_y[:4 * n] if len(data.classes) > 1 else None
    return full_check(quality, reference_split(data.train_x, n), pool, labels, FeatureExtractor(network),
                      {f: untrained_fid(f, held_out, state, meta, n) for f in families})


def assert_rising(verdict: Verdict) -> None:
    assert verdict.passed, verdict.failures
    assert set(verdict.sequences) == {*LEVELS, "modes"} and len(verdict.sequences["modes"]) == len(MODE_SHARES)
    for kind, values in verdict.sequences.items():
        steps = [verdict.floor, *values]
        assert all(b > a for a, b in zip(steps, steps[1:])), (kind, steps)
    assert all(v > 3 * verdict.floor for v in verdict.untrained.values()), verdict.untrained


def test_a_labeled_datasets_classifier_passes_the_disturbance_tests(cache_dir):
    assert_rising(checked(load_dataset("digits"), "classifier", ("dcgan", "vae")))


def test_an_unlabeled_folders_simclr_features_pass_the_disturbance_tests(cache_dir, tmp_path):
    """docs/data.md's own example of your own images (no labels): SimCLR features, the default there."""
    from trainables.datasets.example_folder import build

    build(tmp_path / "sigs")
    options = {"image_size": (32, 64)}
    data = load_dataset("image_folder", tmp_path / "sigs", options=options)
    verdict = checked(data, "auto", ("dcgan", "gan"), tmp_path / "sigs", options)
    assert_rising(verdict)
    state, meta = feature_network("auto", data, data_root=tmp_path / "sigs", data_options=options)
    assert meta["name"] == "simclr-image_folder" and meta["kind"] == "simclr"


def test_the_judge_fails_a_sequence_that_does_not_rise(cache_dir):
    """Real readings in the wrong order (noise from strong to mild) and an untrained generator that
    reads like real data both fail; the same readings in order pass."""
    data = load_dataset("digits")
    quality = SampleQuality(build_feature_network(*feature_network("classifier", data)), data.test_x, torch.device("cpu"))
    reference = reference_split(data.train_x, len(data.test_x))
    readings = disturbance_readings(quality, reference)
    floor = quality(reference)["fid"]
    assert Verdict(floor, readings).judge().passed
    backwards = Verdict(floor, {**readings, "noise": readings["noise"][::-1]}).judge()
    assert not backwards.passed and "noise does not rise" in backwards.failures[0]
    flat = Verdict(floor, readings, {"dcgan": 2 * floor}).judge()
    assert not flat.passed and "untrained dcgan" in flat.failures[0]


def test_disturbances_are_seeded_and_stay_in_range():
    images = torch.rand(8, 1, 16, 16) * 2 - 1
    for kind, levels in LEVELS.items():
        for level in levels:
            out = disturb(images, kind, level, seed=3)
            assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
            assert torch.equal(out, disturb(images, kind, level, seed=3)) and not torch.equal(out, images)
    assert disturb(torch.zeros(2, 1, 4, 9), "blur", 3.0).shape == (2, 1, 4, 9)  # a kernel no wider than the image
    holes = disturb(torch.ones(4, 1, 16, 16), "rectangles", 1)
    assert ((holes == -1).flatten(1).sum(1) == 16).all()  # one black 4x4 rectangle per image


def test_the_sweeps_check_records_its_figures_and_refuses_a_space_that_fails(cache_dir):
    data = load_dataset("digits")
    state, meta = checked_feature_network("auto", data, 300, log=lambda m: None)
    check = meta["check"]
    assert meta["name"] == "classifier-digits" and check["passed"] and check["images"] == len(data.test_x)
    assert set(check["sequences"]) == set(LEVELS) and check["instead_of"] == [] and check["seconds"] > 0
    assert json.loads(json.dumps(meta)) == meta  # plain JSON, for sweep.json
    # a sweep evaluating on 12 held-out images: FID's bias at a dozen images hides every disturbance
    from dataclasses import replace

    tiny = replace(data, test_x=data.test_x[:12], test_y=data.test_y[:12], train_x=data.train_x[:12],
                   train_y=data.train_y[:12])
    from trainables.errors import BadInput

    with pytest.raises(BadInput, match="on only 12 held-out images.*--skip-feature-check"):
        checked_feature_network("classifier", tiny, 12, log=lambda m: None)
    state, meta = checked_feature_network("classifier", tiny, 12, log=lambda m: None, check=False)
    assert "check" not in meta


@pytest.mark.slow
def test_a_sweep_refuses_a_feature_space_that_fails_in_one_line(cache_dir, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 12)):
        (tmp_path / "few" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "few" / split / f"{i}.png")
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "image_folder", "--data-root", str(tmp_path / "few"),
                   "--image-size", "16", "--fid-features", "classifier", "--storage", str(tmp_path / "exp"))
    assert_one_line_error(proc, "can't tell disturbed from real images", "--skip-feature-check")
    assert not (tmp_path / "exp").exists() or not any((tmp_path / "exp").iterdir())
