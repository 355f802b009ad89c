import contextlib

import numpy as np
import pytest
import torch

from trainables.datasets import load_dataset
from trainables.feature_networks import to_float
from trainables.features import SampleQuality, build_feature_network, get_feature_network


def test_feature_network_is_trained_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path))  # empty, whatever earlier tests cached
    data = load_dataset("digits")
    messages = []
    state, meta = get_feature_network(data, log=messages.append)
    assert meta["test_accuracy"] > 0.6 and meta["name"] == "classifier-digits"
    assert any("training" in m for m in messages)
    again = []
    state2, meta2 = get_feature_network(data, log=again.append)
    assert again == [] and meta2 == meta
    assert all(np.array_equal(state[k], state2[k]) for k in state)


def test_fid_separates_real_images_from_noise(cache_dir):
    data = load_dataset("digits")
    quality = SampleQuality(build_feature_network(*get_feature_network(data)), data.test_x, torch.device("cpu"))
    real = quality(to_float(torch.from_numpy(data.train_x[:360])))
    noise = quality(torch.rand(360, 1, 16, 16) * 2 - 1)
    assert np.isfinite(real["fid"]) and real["fid"] * 5 < noise["fid"]
    assert real["kid"] < noise["kid"]


def test_a_subset_is_measured_with_the_whole_datasets_feature_network(cache_dir):
    """--subset cuts what the generator learns from, not the instrument: a classifier trained on a
    few hundred images gave FIDs near 0.2 for a 500-image DCGAN sweep, comparable with nothing."""
    from trainables.features import feature_network

    full_state, full = feature_network("classifier", load_dataset("digits"))
    cut_state, cut = feature_network("classifier", load_dataset("digits", subset=100), subset=100)
    assert cut["key"] == full["key"] and cut["test_accuracy"] == full["test_accuracy"] > 0.6
    assert all(np.array_equal(full_state[k], cut_state[k]) for k in full_state)


def test_a_reused_trial_process_keeps_its_evaluator_for_the_same_data_and_features(ray_address):
    """Tune's next trial in a process gets the last trial's Evaluator (its real-image features
    computed once) when the data, features and sample count are the sweep's same; otherwise a new one."""
    from types import SimpleNamespace

    import ray

    from trainables.loop import shared_evaluator

    data = load_dataset("digits")
    features = get_feature_network(data, log=lambda _: None)
    ray.init(address=ray_address, logging_level="WARNING")
    try:
        refs = ray.put(data), ray.put(features)
        other = ray.put(data)

        def run(data_ref, eval_samples=100):
            return SimpleNamespace(settings=SimpleNamespace(data_ref=data_ref, feature_ref=refs[1],
                                                            loop=SimpleNamespace(eval_samples=eval_samples)))

        cpu = torch.device("cpu")
        first = shared_evaluator(run(refs[0]), data, features, cpu)
        scores = first.quality(torch.rand(100, 1, 16, 16) * 2 - 1)
        assert shared_evaluator(run(refs[0]), data, features, cpu) is first
        assert first.quality(torch.rand(100, 1, 16, 16) * 2 - 1)["fid"] != scores["fid"]  # fakes are not kept
        assert shared_evaluator(run(refs[0], 50), data, features, cpu) is not first
        assert shared_evaluator(run(other), data, features, cpu).n == 100
        assert shared_evaluator(run(None), data, features, cpu) is not shared_evaluator(run(None), data, features, cpu)
    finally:
        ray.shutdown()


class RecordingSession:
    """The loop's session (trainables/loop.py's docstring) for one CPU worker, outside Ray: it keeps
    each reported checkpoint's files, by step."""

    rank, world, device = 0, 1, torch.device("cpu")

    def __init__(self):
        self.checkpoints = {}

    @staticmethod
    def prepare_model(module):
        return module

    @staticmethod
    def worker_nodes():
        return []

    @staticmethod
    def start_checkpoint():
        return contextlib.nullcontext(None)

    def report(self, metrics, folder=None):
        if folder is not None:
            self.checkpoints[metrics["step"]] = {p.name: p.read_bytes() for p in folder.iterdir()
                                                 if p.suffix == ".safetensors"}


def test_training_does_not_depend_on_how_often_the_trial_is_evaluated(cache_dir):
    """Evaluations (KID's random subsets, the cost metrics) and building an Evaluator draw random
    numbers; none of it may shift the trial's own stream: the same trial evaluated every 5 steps
    or every 10 has the same weights at step 10, bit for bit."""
    from trainables.loop import train_loop
    from trainables.models import get_family
    from trainables.settings import CheckpointConfig, LoopSettings, Resources, TrialRun, TrialSettings

    data = load_dataset("digits")
    features = get_feature_network(data)
    weights = []
    for eval_every in (5, 10):
        settings = TrialSettings(
            loop=LoopSettings(model="dcgan", seed=0, max_steps=10, eval_every=eval_every, log_every=5, eval_samples=50),
            resources=Resources(), checkpoint=CheckpointConfig("dcgan", "digits", [1, 16, 16], {}, "classifier", "x"),
            checkpoint_root="unused", keep_checkpoints=1, max_failures=0, report_checkpoints=True)
        session = RecordingSession()
        hp = {**get_family("dcgan").defaults, "batch_size": 16}
        train_loop(TrialRun(settings, hp, settings.checkpoint.but(trial_id=f"every{eval_every}")), session, data,
                   features)
        assert sorted(session.checkpoints) == ([5, 10] if eval_every == 5 else [10])
        weights.append(session.checkpoints[10])
    assert weights[0] and weights[0] == weights[1]


def test_a_backbone_from_the_users_weights_file_is_loaded_and_measures(tmp_path, cache_dir):
    """--fid-features FILE.safetensors: a torchvision ResNet's weights (here a fresh resnet18 of the
    test's own; a lab would give its ImageNet weights), read without unpickling, its layer named."""
    import torchvision
    from safetensors.torch import save_file

    from trainables.errors import BadInput
    from trainables.features import Evaluator, feature_network

    torch.manual_seed(0)
    weights = tmp_path / "my-resnet.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}, str(weights))
    data = load_dataset("digits")
    state, meta = feature_network(str(weights), data)
    assert meta["arch"] == "resnet18" and meta["name"] == "resnet18.avgpool-my-resnet" and meta["feature_dim"] == 512
    network = build_feature_network(state, meta)
    first = next(iter(network.net.state_dict()))
    assert torch.equal(network.net.state_dict()[first], torch.from_numpy(state[first]))  # the file's weights, not new ones
    evaluator = Evaluator(data, 32, state, meta, torch.device("cpu"))
    real = evaluator.quality(to_float(torch.from_numpy(data.train_x[:32])))
    noise_images = torch.rand(32, 1, 16, 16) * 2 - 1
    noise = evaluator.quality(noise_images)
    assert np.isfinite(real["fid"]) and real["fid"] < noise["fid"] and evaluator.classify(noise_images) is None
    # anything else is refused with what it is
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(BadInput, match="not the state dict of a torchvision inception_v3, resnet50, resnet18"):
        feature_network(str(tmp_path / "other.safetensors"), data)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BadInput, match="not a readable safetensors file"):
        feature_network(str(tmp_path / "broken.safetensors"), data)


def test_a_feature_network_in_training_says_how_long_it_has_left():
    """A first feature network took 647 s on a busy machine with no word (issue 30 item 5): after a
    few seconds (here at once) its training says about how long the rest will take."""
    from trainables.feature_training import train_classifier

    said = []
    train_classifier(load_dataset("digits"), epochs=1, log=said.append, eta_after=0)
    assert len(said) == 1 and said[0].startswith("feature network: about ") and "of 12 steps" in said[0], said
