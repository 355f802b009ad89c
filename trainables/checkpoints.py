"""Checkpoint directories: tensors and plain JSON only, loaded without unpickling arbitrary objects.

    model.safetensors     every module's state_dict, keys prefixed by the module's name
    training_state.pt     optimizer state_dicts + step (torch.save, read with weights_only=True)
    config.json           model family, hyperparameters, dataset, image shape, trial, step, code version
    metrics.json          the metrics reported with this checkpoint
    samples.png           a grid of generated images (fixed seed), or input -> output rows
    evaluation.json       optional: what the evaluation measured beyond scores (e.g. a ROC curve)
"""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.utils import save_image

from trainables.errors import BadInput
from trainables.family import ModelFamily, UnknownFamily
from trainables.layout import COMPLETE, CONFIG, EVALUATION, METRICS, SAMPLES, STATE, WEIGHTS
from trainables.models import family_for
from trainables.settings import CheckpointConfig
from trainables.storage import is_complete, is_uri, location, pull

CODE_VERSION = "0.2.0"  # 0.2.0: checkpoints end with a marker (trainables.layout.COMPLETE)


class CheckpointError(BadInput):
    """A checkpoint directory that is missing files, damaged, or not one of ours."""


def save_grid(images: torch.Tensor, path: Path | str, nrow: int | None = None, upscale: int = 1) -> None:
    """Images in [-1, 1] -> one PNG grid; `upscale` enlarges each image that many times (nearest neighbour)."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    images = images.detach().float().cpu().repeat_interleave(upscale, -1).repeat_interleave(upscale, -2)
    save_image(images, str(path), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)


def save_checkpoint(folder: Path, modules: dict[str, nn.Module], optimizers: dict, step: int,
                    config: CheckpointConfig, metrics: dict, samples: torch.Tensor, nrow: int | None = None,
                    artifacts: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weights = {f"{name}.{key}": value.detach().cpu().contiguous()
               for name, module in modules.items() for key, value in module.state_dict().items()}
    save_file(weights, str(folder / WEIGHTS))
    torch.save({"step": step, "optimizers": {k: o.state_dict() for k, o in optimizers.items()}}, folder / STATE)
    (folder / CONFIG).write_text(json.dumps(config.to_json(step, CODE_VERSION), indent=1))
    (folder / METRICS).write_text(json.dumps(metrics, indent=1))
    save_grid(samples, folder / SAMPLES, nrow)
    if artifacts:
        (folder / EVALUATION).write_text(json.dumps(artifacts))


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent} is not a checkpoint: {path.name} is missing") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return value


def load_weights(folder: Path, modules: dict[str, nn.Module]) -> None:
    path = folder / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint: {WEIGHTS} is missing")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged ({e})") from None
    for name, module in modules.items():
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{path} does not fit its config.json ({first})") from None


def read_training_state(folder: Path) -> dict:
    """training_state.pt, read by torch's weights-only unpickler: tensors and plain containers only.
    Anything else (a class, a function such as os.system) is refused, never called."""
    path = folder / STATE
    if not path.is_file():
        raise CheckpointError(f"{folder} cannot be resumed: {STATE} is missing")
    try:
        with warnings.catch_warnings():  # torch warns of foreign pickle protocols: the refusal below says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(e), re.IGNORECASE)
        what = f"it would call {found.group(1)}" if found else "it holds more than tensors and plain values"
        raise CheckpointError(f"{path} is refused: {what} (a tampered or foreign file); "
                              f"use a checkpoint written by this project") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is damaged ({first})") from None
    if not isinstance(state, dict) or not isinstance(state.get("optimizers"), dict) \
            or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path} is not a training state of this project (no step and optimizers)")
    return state


def load_training_state(folder: Path, modules: dict[str, nn.Module], optimizers: dict) -> int:
    """Restore weights and optimizer state for resuming; returns the step to continue from."""
    load_weights(folder, modules)
    state = read_training_state(folder)
    for name, optimizer in optimizers.items():
        if name not in state["optimizers"]:
            raise CheckpointError(f"{folder / STATE} has no state for the optimizer {name!r}: "
                                  f"a checkpoint of another model?")
        try:
            optimizer.load_state_dict(state["optimizers"][name])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{folder / STATE} does not fit the model's optimizer {name!r} ({e})") from None
    return state["step"]


@dataclass
class LoadedModel:
    """A checkpoint's modules, ready for inference (eval mode, on `device`)."""
    family: ModelFamily
    config: dict
    modules: dict[str, nn.Module]
    device: torch.device

    @property
    def hp(self) -> dict:
        return self.config["hp"]

    @property
    def info(self) -> dict:
        """The training data's description: shape, classes, domains (see ImageData.info)."""
        return self.config["data"]

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """`n` generated images in [-1, 1] (on the CPU); `labels` for conditional families."""
        if labels is not None:
            labels = labels.to(self.device)
        return self.family.generate(self.modules, n, self.hp, seed, labels=labels).float().cpu()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.family.encode(self.modules, images.to(self.device), self.hp).float().cpu()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.family.decode(self.modules, z.to(self.device), self.hp).float().cpu()

    def translate(self, images: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        return self.family.translate(self.modules, images.to(self.device), self.hp, direction).float().cpu()

    def anomaly_score(self, images: torch.Tensor) -> torch.Tensor:
        return self.family.anomaly_score(self.modules, images.to(self.device), self.hp).float().cpu()


def load_checkpoint(folder: str | Path, device: str | torch.device | None = None) -> LoadedModel:
    """Load a checkpoint directory for inference. Reads JSON and safetensors only; never unpickles.

    >>> model = load_checkpoint("experiments/dcgan-.../best/rank1_...")
    >>> images = model.sample(64, seed=0)   # (64, C, H, W) in [-1, 1]

    `folder` may be a URI (s3://.../checkpoint_...): a complete checkpoint is downloaded, weights
    and all, to its mirror under ~/.cache/gen-orchestrator/remote/ (trainables.storage).
    """
    if is_uri(str(folder)):
        remote = location(folder)
        if not is_complete(remote):
            raise CheckpointError(f"{remote} is not a complete checkpoint ({COMPLETE} is missing: being written, "
                                  f"its writer died, or not a checkpoint)")
        folder = pull(remote, weights=True)
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint directory {folder} does not exist")
    config = read_json(folder / CONFIG)
    for key, kind in (("model", str), ("hp", dict), ("data", dict)):
        if not isinstance(config.get(key), kind):
            raise CheckpointError(f"{folder / CONFIG} lacks {key!r} ({kind.__name__}): not a checkpoint of this project")
    try:
        family = family_for(config["model"], config.get("family_source"))
    except UnknownFamily as e:
        raise CheckpointError(f"{folder}: {e.args[0]}") from None
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = config["data"].get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and 0 < n <= 4096 for n in shape)):
        raise CheckpointError(f"{folder / CONFIG}: 'data' does not describe the training images (shape C, H, W)")
    try:
        modules = family.build({**family.defaults, **config["hp"]}, config["data"])
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{folder / CONFIG}: its hyperparameters don't build a {family.name} model "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    load_weights(folder, modules)
    for module in modules.values():
        module.to(device).eval()
    return LoadedModel(family, config, modules, device)
