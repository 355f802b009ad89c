"""The networks FID/KID measure in, and the image scaling they take: the project's small CNN
(FeatureClassifier, trained by trainables.feature_training), what torchmetrics calls
(FeatureExtractor), and a torchvision backbone with the user's own weights (BackboneFeatures).
trainables.features picks, caches and builds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 64


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range every generator outputs."""
    return images_uint8.float().div(127.5).sub(1.0)


class FeatureClassifier(nn.Module):
    """Small CNN classifier; `features` (its penultimate layer) is the space FID/KID measure in."""

    def __init__(self, channels: int, num_classes: int, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.num_features = feature_dim  # read by torchmetrics
        self.channels = channels  # what it takes (a backbone takes any: BackboneFeatures)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class FeatureExtractor(nn.Module):
    """What torchmetrics calls: float images in [-1, 1] -> (N, feature_dim) float features."""

    def __init__(self, classifier: FeatureClassifier):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())


# --- a pretrained backbone from the user's own weights file ---------------------------------------

# torchvision architectures whose state dict a --fid-features FILE may hold: (input side, feature
# dimension, builder options that give the pretrained weights' layout)
BACKBONES = {
    "inception_v3": (299, 2048, {"aux_logits": True, "init_weights": False, "transform_input": True}),
    "resnet50": (224, 2048, {}),
    "resnet18": (224, 512, {}),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class BackboneFeatures(nn.Module):
    """A torchvision classifier pretrained by the user (Inception-v3, as published FIDs use, or a
    ResNet), its pooled features (the layer before `fc`) what FID/KID measure: images in [-1, 1]
    become RGB at the input size, normalised as ImageNet's were."""

    def __init__(self, arch: str, state: dict[str, torch.Tensor]):
        import torchvision

        super().__init__()
        side, self.num_features, options = BACKBONES[arch]
        self.side, self.channels = side, None
        self.net = getattr(torchvision.models, arch)(weights=None, **options)
        self.net.load_state_dict(state)
        self.net.fc = nn.Identity()
        self.net.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = to_inception_input(x)
        x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images with 1 or 3 channels -> [0, 1] RGB, what torchmetrics' Inception expects."""
    images = (images.float() + 1) / 2
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
