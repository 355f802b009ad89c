"""How the project makes its own feature networks from a dataset (TRAINERS, by kind): a classifier
of the labels, contrastive self-supervision (SimCLR) on the images, or a random network.
trainables.features trains each once per dataset and caches it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from trainables.datasets import ImageData
from trainables.feature_networks import FeatureClassifier, to_float


def classifier_training_set(data: ImageData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images and labels the feature classifier learns from: both domains of paired data (a sketch
    has its image's label), so FID can measure sketches and images in one feature space."""
    if data.paired and data.train_a is not None and data.train_a.shape[1:] == data.train_x.shape[1:]:
        return (np.concatenate([data.train_x, data.train_a]), np.concatenate([data.train_y, data.train_y]),
                np.concatenate([data.test_x, data.test_a]), np.concatenate([data.test_y, data.test_y]))
    return data.train_x, data.train_y, data.test_x, data.test_y


ETA_AFTER_SECONDS = 5.0  # a feature network still training after this long says how long it has left


def time_left(log, total_steps: int, after: float = ETA_AFTER_SECONDS):
    """A function of the steps done that, once `after` seconds have passed, says once (through
    `log`) about how long the rest of `total_steps` will take: a first network can take minutes on
    a busy machine."""
    start, said = time.perf_counter(), []

    def tick(done: int) -> None:
        elapsed = time.perf_counter() - start
        if log and not said and done and elapsed >= after:
            log(f"feature network: about {elapsed / done * (total_steps - done):.0f} s to go "
                f"({done} of {total_steps} steps in {elapsed:.0f} s)")
            said.append(True)
    return tick


def train_classifier(data: ImageData, epochs: int = 2, batch: int = 128, seed: int = 0, log=None,
                     eta_after: float = ETA_AFTER_SECONDS) -> tuple[FeatureClassifier, float]:
    """Cross-entropy on class labels, or binary cross-entropy on multi-hot attributes (CelebA).
    Returns the model and its held-out accuracy (per attribute, for multi-hot labels)."""
    torch.manual_seed(seed)
    train_x, train_y, test_x, test_y = classifier_training_set(data)
    model = FeatureClassifier(data.shape[0], len(data.classes))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    loss_fn = (lambda logits, t: F.binary_cross_entropy_with_logits(logits, t.float())) if data.multilabel \
        else F.cross_entropy
    rng = torch.Generator().manual_seed(seed)
    tick, done = time_left(log, epochs * -(-len(x) // batch), eta_after), 0
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=rng).split(batch):
            loss = loss_fn(model(to_float(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            tick(done)
    model.eval()
    with torch.no_grad():
        tx, ty = torch.from_numpy(test_x), torch.from_numpy(test_y)
        correct = 0.0
        for i in range(0, len(tx), 1000):
            logits = model(to_float(tx[i:i + 1000]))
            hits = ((logits > 0) == ty[i:i + 1000].bool()).float().mean(1) if data.multilabel \
                else (logits.argmax(1) == ty[i:i + 1000]).float()
            correct += hits.sum().item()
    return model, correct / len(tx)


def unlabeled_images(data: ImageData, cap: int = 5000) -> np.ndarray:
    """The training images a label-free feature network learns from: both domains of two-domain
    data of one shape, at most `cap` of each (evenly spaced)."""
    parts = [data.train_x] + ([data.train_a] if data.train_a is not None and data.train_a.shape[1:] == data.shape else [])
    return np.concatenate([images[::max(1, len(images) // cap)][:cap] for images in parts])


def train_random(data: ImageData, seed: int = 0, log=None) -> tuple[FeatureClassifier, None]:
    """A randomly initialised network of the classifier's layout, never trained: the feature
    space Naeem et al. 2020 found workable where no trained network fits the domain."""
    torch.manual_seed(seed)
    return FeatureClassifier(data.shape[0], 1).eval(), None


SIMCLR_STEPS, SIMCLR_BATCH, SIMCLR_TEMPERATURE = 300, 128, 0.2
# trainables.augment's policies: the invariances the features learn. Not jitter: features blind to
# brightness and contrast read an untrained generator's low-contrast grey close to ink on paper
# (FID 2.2 against the trained DCGAN's 1.95 at step 90 on the example folder; without it 21 against 6.3)
SIMCLR_VIEWS = "crop+rotate"


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's contrastive loss (Chen et al. 2020): each view's partner is its positive, the
    other 2N - 2 views of the batch its negatives."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(-math.inf)
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(similarity, targets)


def train_simclr(data: ImageData, steps: int = SIMCLR_STEPS, batch: int = SIMCLR_BATCH,
                 seed: int = 0, log=None) -> tuple[FeatureClassifier, float]:
    """Contrastive self-supervision on the dataset's own images (SimCLR): two augmented views of
    each image (trainables.augment, torchvision v2) pulled together, other images pushed apart;
    the classifier's `head` is the projection the loss sees, its `body` the features. Returns the
    model and its last loss."""
    from trainables.augment import augment_batch, background

    torch.manual_seed(seed)
    images = torch.from_numpy(unlabeled_images(data))
    fills = {"x": background(images.numpy())}
    model = FeatureClassifier(data.shape[0], 32)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = torch.Generator().manual_seed(seed)
    model.train()
    loss, tick = torch.tensor(math.nan), time_left(log, steps)
    for step in range(steps):
        x = to_float(images[torch.randint(len(images), (min(batch, len(images)),), generator=rng)])
        views = [augment_batch({"x": x}, SIMCLR_VIEWS, False, fills)["x"] for _ in range(2)]
        loss = nt_xent(model(views[0]), model(views[1]), SIMCLR_TEMPERATURE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tick(step + 1)
    return model.eval(), loss.item()


# how each kind of feature network is made from a dataset: (trainer, the metadata key of the figure
# it returns, what its cache key adds: the recipe, so a changed recipe trains anew)
TRAINERS = {"classifier": (train_classifier, "test_accuracy", ""), "random": (train_random, None, "-random"),
            "simclr": (train_simclr, "contrastive_loss", f"-simclr-{SIMCLR_VIEWS}-{SIMCLR_STEPS}")}
