"""The feature network behind FID/KID (the one a sweep asked for: made once and cached, or read
from the user's file), and the sample-quality evaluator trials use.

Inception weights can't be downloaded everywhere (and Inception features say little about 28x28
grey images), so by default FID/KID use the penultimate layer of a small CNN classifier that the
project trains once per dataset, caches on disk, and shares with trials through Ray's object
store (as Ray's own pbt_dcgan_mnist example scores samples with an MNIST classifier). Scores
from it are labelled `classifier-<dataset>` and are not comparable with Inception FID.
The networks themselves are in trainables.feature_networks, how the project trains its own in
trainables.feature_training.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trainables.datasets import ImageData, cache_dir
from trainables.errors import BadInput
from trainables.feature_networks import (BACKBONES, FEATURE_DIM, BackboneFeatures, FeatureClassifier, FeatureExtractor,
                                         to_float, to_inception_input)
from trainables.feature_training import TRAINERS
from trainables.settings import FEATURE_KINDS, UNLABELED_DEFAULT, WEIGHTS_SUFFIX

FEATURE_VERSION = 2  # bump when the architecture or training recipe changes


def fingerprint(data: ImageData) -> str:
    h = hashlib.sha256()
    h.update(repr((data.name, data.train_x.shape, data.test_x.shape, FEATURE_VERSION)).encode())
    h.update(data.train_x[:: max(1, len(data.train_x) // 256)].tobytes())
    if data.train_a is not None:  # what a network of both domains learns from (single-domain keys as before)
        h.update(data.train_a[:: max(1, len(data.train_a) // 256)].tobytes())
    return h.hexdigest()[:16]


def get_feature_network(data: ImageData, log=print, kind: str = "classifier") -> tuple[dict[str, np.ndarray], dict]:
    """The dataset's feature network of `kind` (TRAINERS; trained now or read from the cache) as
    numpy weights + metadata."""
    trainer, merit, recipe = TRAINERS[kind]
    key = f"{data.name}-{fingerprint(data)}{recipe}"
    folder = cache_dir() / "features"
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    if weights.is_file() and meta_path.is_file():
        try:
            return {k: v.numpy() for k, v in load_file(weights).items()}, json.loads(meta_path.read_text())
        except Exception:  # a damaged cache entry is retrained, not trusted
            pass
    log(f"training the {data.name} feature network ({kind}) for FID/KID (once; cached in {folder}) ...")
    start = time.time()
    model, figure = trainer(data, log=log)
    meta = {"name": f"{kind}-{data.name}", "kind": kind, "feature_dim": FEATURE_DIM, "test_accuracy": None,
            **({merit: round(figure, 4)} if merit else {}), "train_seconds": round(time.time() - start, 1),
            "channels": data.shape[0], "num_classes": model.head.out_features, "version": FEATURE_VERSION, "key": key}
    log(f"feature network: {merit.replace('_', ' ') + f' {figure:.3f} ' if merit else ''}in {meta['train_seconds']} s")
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    meta_path.write_text(json.dumps(meta, indent=1))
    return {k: v.numpy() for k, v in state.items()}, meta


def build_feature_network(state: dict[str, np.ndarray], meta: dict) -> nn.Module:
    """The network of `meta` with the weights `state`: a backbone from the user's file, or one of
    the project's small CNNs (a classifier, SimCLR's or a random one)."""
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    if meta.get("arch"):
        return BackboneFeatures(meta["arch"], tensors)
    model = FeatureClassifier(meta["channels"], meta["num_classes"], meta["feature_dim"])
    model.load_state_dict(tensors)
    return model.eval()


def backbone_network(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """--fid-features FILE: a torchvision Inception-v3 or ResNet state dict in safetensors (read
    without unpickling), its architecture told by its keys; the layer measured is named in the
    network's name, which every output shows."""
    import torchvision

    try:
        tensors = load_file(path)
    except Exception as e:  # missing, unreadable, or not safetensors
        raise BadInput(f"--fid-features {path}: not a readable safetensors file ({type(e).__name__})") from None
    for arch, (_, dim, options) in BACKBONES.items():
        expected = getattr(torchvision.models, arch)(weights=None, **options).state_dict()
        if set(expected) == set(tensors) and all(expected[k].shape == tensors[k].shape for k in expected):
            name = f"{arch}.avgpool-{Path(path).stem}"
            return ({k: v.numpy() for k, v in tensors.items()},
                    {"name": name, "kind": str(Path(path).resolve()), "arch": arch, "feature_dim": dim,
                     "test_accuracy": None, "layer": "avgpool", "file": str(Path(path).resolve())})
    raise BadInput(f"--fid-features {path}: not the state dict of a torchvision {', '.join(BACKBONES)} "
                   f"({len(tensors)} tensors, e.g. {next(iter(tensors), 'none')!r})")


INCEPTION = "inception-v3"


def inception_network() -> tuple[dict, dict]:
    """Inception-v3 features (2048-d), as published FIDs use. torch-fidelity downloads its weights
    on first use (or finds them in $TORCH_HOME), so this needs the `inception` extra and either
    internet access or weights placed there."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise BadInput("--fid-features inception needs torch-fidelity: pip install 'gen-orchestrator[inception]'") from None
    return {}, {"name": INCEPTION, "kind": "inception", "feature_dim": 2048, "test_accuracy": None}


def has_labels(data: ImageData) -> bool:
    """Whether the dataset's labels can train a feature classifier: folders without class
    sub-folders get a rotation dataset (`NAME_rotations`) instead."""
    return not (data.feature_dataset or "").endswith("_rotations")


def feature_network(kind: str, data: ImageData, log=print, data_root=None, data_options=None,
                    subset: int | None = None) -> tuple[dict, dict]:
    """The FID/KID feature network a sweep asked for (FEATURE_KINDS). Data derived from another
    dataset (e.g. two of its classes) uses that dataset's classifier, loaded with the options it
    shares with the derived one (e.g. celeba_split's image size). The network is a measuring
    instrument, made from every training image: a `subset` (--subset, the data the generator
    learns from) gets the whole dataset's, or its FIDs would be measured with a network trained on
    a few hundred images, and not comparable with any other sweep's."""
    from trainables.datasets import load_dataset

    if kind == "inception":
        return inception_network()
    if kind.endswith(WEIGHTS_SUFFIX):
        return backbone_network(kind)
    if kind not in FEATURE_KINDS:
        raise BadInput(f"--fid-features {kind!r}: one of {', '.join(FEATURE_KINDS)}")
    if kind == "auto":
        kind = "classifier" if has_labels(data) else UNLABELED_DEFAULT
    own_images = kind in ("simclr", "random") or (kind == "rotation" and has_labels(data))
    if own_images or not data.feature_dataset or data.feature_dataset == data.name:
        whole = load_dataset(data.name, data_root, options=data_options, strict=False) if subset else data
    else:  # the classifier of the dataset this one derives from, or the rotations of a folder without labels
        whole = load_dataset(data.feature_dataset, data_root, options=data_options, strict=False)
    if kind in ("simclr", "random"):  # the user's own images, both domains
        return get_feature_network(whole, log=log, kind=kind)
    if own_images:  # rotations of labeled data
        from trainables.datasets.rotations import rotated

        whole = rotated(whole, f"{whole.name}_rotations")
    state, meta = get_feature_network(whole, log=log)
    # what was asked for, so orchestrator.rescore measures in the same space (a classifier of rotations either way)
    return state, {**meta, "kind": kind}


class SampleQuality:
    """FID and KID of generated images against a fixed set of held-out real images.

    Real features are computed once; each call only embeds the new fake images.
    """

    def __init__(self, classifier: FeatureClassifier | None, real_uint8: np.ndarray, device: torch.device,
                 batch: int = 500):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        self.n = len(real_uint8)
        self.batch = batch
        self.device = device
        if classifier is None:  # Inception-v3 from torch-fidelity
            feature, self.prepare, normalize = 2048, to_inception_input, True
        else:
            feature, self.prepare, normalize = FeatureExtractor(classifier).to(device), (lambda x: x), False
        # only rank 0 evaluates: no syncing with the other DDP workers, who never call compute()
        common = {"feature": feature, "reset_real_features": False, "normalize": normalize, "sync_on_compute": False}
        self.fid = FrechetInceptionDistance(**common).to(device)
        self.kid = KernelInceptionDistance(**common, subset_size=min(100, self.n // 2), subsets=50).to(device)
        real = torch.tensor(real_uint8)  # a copy: object-store arrays are read-only
        for i in range(0, self.n, batch):
            chunk = self.prepare(to_float(real[i:i + batch]).to(device))
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)

    @torch.no_grad()
    def __call__(self, fake: torch.Tensor) -> dict[str, float]:
        """`fake`: float images in [-1, 1], as many as there are real images."""
        self.fid.reset()
        self.kid.reset()
        for chunk in fake.split(self.batch):
            chunk = self.prepare(chunk.float().clamp(-1, 1).to(self.device))
            self.fid.update(chunk, real=False)
            self.kid.update(chunk, real=False)
        kid_mean, kid_std = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


class Evaluator:
    """What a family's `evaluate` gets: a fixed slice of held-out data (images, labels, and the
    source domain of two-domain data) and FID/KID scorers in the feature network's space.
    Real-image features are computed once per domain, on first use."""

    def __init__(self, data: ImageData, n: int, feature_state: dict, feature_meta: dict, device: torch.device):
        self.device = device
        self.n = min(n, len(data.test_x))
        self.real_uint8 = {"x": data.test_x[:self.n]}
        if data.test_a is not None:
            self.real_uint8["a"] = data.test_a[:min(n, len(data.test_a))]
        self.labels = torch.tensor(data.test_y[:self.n]).to(device)
        self.classes = list(data.classes)
        self.multilabel = data.multilabel
        self.paired = data.paired
        self.feature_name = feature_meta["name"]
        # a classifier of the dataset's classes can label samples (cgan's label_accuracy); other spaces can't
        self.classifies = feature_meta.get("kind", "classifier") == "classifier" and has_labels(data)
        self.classifier = None if feature_meta["name"] == INCEPTION else build_feature_network(feature_state, feature_meta).to(device)
        self._quality: dict[str, SampleQuality] = {}

    def size(self, domain: str = "x") -> int:
        return len(self.real_uint8[domain])

    def real(self, domain: str = "x") -> torch.Tensor:
        """The held-out images of a domain ('x', or 'a' for the source domain) as floats in [-1, 1]."""
        return to_float(torch.tensor(self.real_uint8[domain])).to(self.device)

    def quality(self, fake: torch.Tensor, domain: str = "x") -> dict[str, float]:
        """FID, KID and KID's spread of `fake` against the held-out images of `domain`."""
        if domain not in self._quality:
            takes = getattr(self.classifier, "channels", None)
            if takes is not None and self.real_uint8[domain].shape[1] != takes:
                raise ValueError(f"domain {domain!r} has {self.real_uint8[domain].shape[1]} channels; "
                                 f"the feature network takes {takes}")
            self._quality[domain] = SampleQuality(self.classifier, self.real_uint8[domain], self.device)
        return self._quality[domain](fake)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor | None:
        """The feature classifier's logits for images in [-1, 1] (None unless the features are a
        classifier of the dataset's own classes)."""
        if self.classifier is None or not self.classifies:
            return None
        return torch.cat([self.classifier(chunk.float().to(self.device)) for chunk in images.split(500)])
