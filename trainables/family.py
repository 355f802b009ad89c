"""The contract every model family fills in, and the registry families register in (looked up
through trainables.models, which imports them all: this module imports no family).

As in pytorch-CycleGAN-and-pix2pix's BaseModel: a family says how to build its modules and
optimizers, what one training step does, how it is evaluated and what inference it offers; the
shared worker loop, the sweep, `best`, `infer` and the dashboard work only from this contract.
Adding a model is one file under `trainables/models/` that subclasses ModelFamily, plus one
search space in `search_spaces/`.

What a family's methods receive:
  hp      the trial's hyperparameters: `defaults` overlaid with the searched values
  info    the dataset's description (ImageData.info()): shape [C, H, W], classes, multilabel,
          paired, domains, shape_a (the source domain's shape, for two-domain data)
  batch   {"x": images in [-1, 1], "y": labels} plus "a": source-domain images for families whose
          `data_kind` is "paired" (a[i] belongs to x[i]) or "unpaired" (drawn independently)
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import torch
from torch import nn

from trainables.errors import BadInput

QUALITY_METRICS = {  # what the Evaluator's `quality` reports
    "fid": "Fréchet distance between Gaussian fits of the features of generated and held-out real images "
           "(lower is better)",
    "kid": "kernel inception distance: unbiased polynomial-kernel MMD between the same features (lower is better)",
    "kid_std": "standard deviation of KID over subsets",
}
# sample_ms: the fastest of several timed batches of COST_BATCH images (at least COST_REPEATS[0], more
# until COST_SECONDS have passed, at most COST_REPEATS[1])
COST_BATCH, COST_REPEATS, COST_SECONDS = 32, (3, 20), 1.0
FAMILIES: dict[str, "ModelFamily"] = {}  # read through trainables.models (get_family, all_families)
DATA_KINDS = ("images", "paired", "unpaired")


LOOP_DEFAULTS = {"augment": "none"}  # hyperparameters the shared loop reads, in every family's defaults


@dataclass(frozen=True)
class Bounds:
    """The numbers a hyperparameter may take: between `low` and `high` (None: unbounded), each
    end open or closed, whole numbers only where `integer`."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.high is None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def admits(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return False
        if self.integer and not float(value).is_integer():
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below


POSITIVE, NON_NEGATIVE, SHARE = Bounds(0, low_open=True), Bounds(0), Bounds(0, 1, low_open=True)
COUNT, SIZE = Bounds(0, integer=True), Bounds(1, integer=True)
# What every family's hyperparameters of these names may take (a family's own `bounds` adds to or
# overrides them): checked before Ray starts for --set and every value a search space can draw.
BOUNDS = {
    **dict.fromkeys(("lr", "lr_g", "lr_d", "lr_e", "grad_clip"), POSITIVE),
    "batch_size": Bounds(2, integer=True),  # batch norm and the losses' means need two images
    **dict.fromkeys(("beta1", "ema_decay"), Bounds(0, 1, high_open=True)),  # Adam's beta1, an EMA's decay
    **dict.fromkeys(("encoder_share", "eval_sample_share"), SHARE),
    "eta": Bounds(0, 1),  # DDIM's stochasticity
    **dict.fromkeys(("beta", "adv_weight", "pair_weight", "lambda_cycle", "lambda_identity", "lambda_l1"), NON_NEGATIVE),
    **dict.fromkeys(("latent_dim", "hidden", "width", "width_d", "embed_dim", "base_channels", "sample_steps"), SIZE),
    "timesteps": Bounds(2, integer=True),
    **dict.fromkeys(("n_blocks", "pool_size", "eval_sample_steps", "normal_class"), COUNT),
}


def bounds_of(family: "ModelFamily", name: str) -> Bounds | None:
    return {**BOUNDS, **family.bounds}.get(name)


def check_bounds(family: "ModelFamily", hp: dict) -> None:
    """Refuse, before Ray starts, a hyperparameter value outside its bounds (one line, BadInput):
    it would fail in every trial."""
    for name, value in hp.items():
        bounds = bounds_of(family, name)
        if bounds and not bounds.admits(value):
            raise BadInput(f"{family.name}: {name} = {value!r} is out of range: it must be {bounds.describe()}")


def check_searched_bounds(family: "ModelFamily", name: str, table: dict) -> None:
    """A searched hyperparameter's range (a search space's uniform/int/... table) within its bounds."""
    bounds = bounds_of(family, name)
    ends = [table[k] for k in ("low", "high") if k in table]
    if bounds and ends and not all(bounds.admits(v) for v in ends):
        raise BadInput(f"{family.name}: {name} searched over [{table['low']:g}, {table['high']:g}] leaves its "
                       f"range: it must be {bounds.describe()}")


def register_family(cls: type["ModelFamily"]) -> type["ModelFamily"]:
    """Class decorator: adds a ModelFamily subclass to the registry, once it keeps the contract. A
    class registered again from the same module (a module or notebook cell run again) replaces it."""
    earlier = FAMILIES.get(getattr(cls, "name", None))
    if earlier is not None and (type(earlier).__module__, type(earlier).__qualname__) == (cls.__module__, cls.__qualname__):
        del FAMILIES[cls.name]
    check_family(cls)
    cls.defaults = {**cls.defaults, **{k: v for k, v in LOOP_DEFAULTS.items() if k not in cls.defaults}}
    FAMILIES[cls.name] = cls()
    return cls


REQUIRED_METHODS = ("build", "optimizers", "train_step")  # ModelFamily's own raise NotImplementedError


def check_family(cls) -> None:
    """Refuse a family that breaks the contract when its module is imported (as torch-fidelity's
    registry checks its entries), rather than in every trial of a sweep."""
    if not (isinstance(cls, type) and issubclass(cls, ModelFamily)):
        raise TypeError(f"register_family takes a subclass of ModelFamily, got {cls!r}")

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(f"model family {cls.__name__}: {message}")

    missing = [m for m in REQUIRED_METHODS if getattr(cls, m) is getattr(ModelFamily, m)]
    require(not missing, f"define {', '.join(missing)} (the methods every family has its own of)")
    if "sample" in cls.inference_modes or cls.evaluate is ModelFamily.evaluate:
        require(cls.generate is not ModelFamily.generate,
                "define generate (evaluate's default and inference's `sample` draw images with it)")
    require(isinstance(cls.name, str) and cls.name.isidentifier(),
            f"name must be an identifier (letters, digits, _), got {cls.name!r}")
    require(cls.name not in FAMILIES, f"the name {cls.name!r} is registered already")
    require(isinstance(cls.description, str) and bool(cls.description.strip()), "description is empty")
    require(isinstance(cls.default_dataset, str) and bool(cls.default_dataset), "default_dataset is empty")
    require(cls.data_kind in DATA_KINDS, f"data_kind must be one of {', '.join(DATA_KINDS)}, got {cls.data_kind!r}")
    for attribute in ("metric_names", "loss_names", "mutable", "inference_modes"):
        names = getattr(cls, attribute)
        require(isinstance(names, tuple) and all(isinstance(n, str) for n in names),
                f"{attribute} must be a tuple of names, got {names!r}")
    require(cls.objective in cls.metric_names, f"objective {cls.objective!r} is not one of metric_names")
    require(cls.mode in ("min", "max"), f"mode must be 'min' or 'max', got {cls.mode!r}")
    require(isinstance(cls.defaults, dict) and "batch_size" in cls.defaults,
            "defaults must be a dict of every hyperparameter, batch_size included")
    require(isinstance(cls.bounds, dict) and all(isinstance(b, Bounds) for b in cls.bounds.values()),
            "bounds must be a dict of Bounds")
    outside = [k for k, v in cls.defaults.items() if (b := bounds_of(cls, k)) and not b.admits(v)]
    require(not outside, f"defaults outside their bounds: {outside}")
    require(set(cls.mutable) <= set(cls.defaults),
            f"mutable names hyperparameters without a default: {sorted(set(cls.mutable) - set(cls.defaults))}")
    described = cls.metric_descriptions if isinstance(cls.metric_descriptions, dict) else {}
    require(all(isinstance(described.get(n), str) for n in (*cls.metric_names, *cls.loss_names)),
            f"metric_descriptions must describe every metric and loss; missing: "
            f"{[n for n in (*cls.metric_names, *cls.loss_names) if not isinstance(described.get(n), str)]}")


# The loop's GradScaler while it trains in fp16 (None otherwise): `update` scales losses through it.
_GRAD_SCALER: contextvars.ContextVar = contextvars.ContextVar("grad_scaler", default=None)


@contextlib.contextmanager
def loss_scaling(scaler):
    """While it lasts, `update` goes through `scaler` (a torch.amp.GradScaler, or None)."""
    token = _GRAD_SCALER.set(scaler)
    try:
        yield
    finally:
        _GRAD_SCALER.reset(token)


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip: tuple | None = None) -> None:
    """One optimisation step on `loss`: gradients cleared, computed, clipped where `clip` is
    (parameters, max_norm), applied. Families step through this, so that the loop's fp16 GradScaler
    (loss_scaling) scales the loss and skips steps whose gradients overflowed."""
    scaler = _GRAD_SCALER.get()
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler else loss).backward()
    if clip:
        if scaler:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(*clip)
    if scaler:
        scaler.step(optimizer)
    else:
        optimizer.step()


class UnknownFamily(BadInput):
    pass


class Unsupported(BadInput):
    """An inference mode or input a family can't handle."""


@dataclass
class EvalResult:
    """What `evaluate` returns: scores reported to Tune (floats), the images of the checkpoint's
    samples.png (arranged in rows of `nrow`; None = a square grid), and optional JSON-able
    artifacts saved as the checkpoint's evaluation.json (e.g. a ROC curve)."""
    scores: dict[str, float]
    images: torch.Tensor
    nrow: int | None = None
    artifacts: dict = field(default_factory=dict)


class ModelFamily:
    name: str = ""
    description: str = ""
    default_dataset: str = "fashion_mnist"
    data_kind: str = "images"  # "images", "paired" (sketch -> image pairs) or "unpaired" (two domains)
    objective: str = "fid"  # the metric a checkpoint is ranked by
    mode: str = "min"
    metric_names: tuple[str, ...] = ("fid", "kid", "kid_std")  # what `evaluate` returns
    loss_names: tuple[str, ...] = ()
    metric_descriptions: dict[str, str] = QUALITY_METRICS  # what each metric and loss means (the dashboard's labels)
    defaults: dict = {}  # every hyperparameter with its default; the search space overrides some
    mutable: tuple[str, ...] = ()  # hyperparameters Population Based Training may mutate (learning rates)
    bounds: dict[str, Bounds] = {}  # what its own hyperparameters may take, beyond the shared BOUNDS
    conditional: bool = False  # generate takes class labels or attributes (cgan): infer's --labels
    inference_modes: tuple[str, ...] = ("sample",)
    rescore_samples: int | None = None  # orchestrator.rescore's default samples per seed (None: every held-out image)
    inference_module: str = "generator"  # the module inference runs: its size is the `params` cost
    # the loop scores the untrained model at step 0, the baseline every curve starts from; a family
    # whose untrained samples are plain noise at a full evaluation's cost (ddpm) turns that off
    scores_untrained: bool = True

    # --- training -------------------------------------------------------------------------------
    def check_data(self, info: dict) -> None:
        """Refuse, before a sweep starts, a dataset this family can't train on."""
        if self.data_kind == "paired" and not info["paired"]:
            raise BadInput(f"{self.name} trains on paired data (sketch -> image); dataset {info['name']!r} has no pairs "
                           f"(try fashion_mnist_edges or a paired folder)")
        if self.data_kind == "unpaired" and info["shape_a"] is None:
            raise BadInput(f"{self.name} translates between two domains; dataset {info['name']!r} has one "
                           f"(try fashion_mnist_edges, sneaker2boot or a trainA/trainB folder)")

    def prepare_data(self, data, hp: dict):
        """The data this trial trains and evaluates on (default: as loaded). E.g. a one-class
        anomaly detector keeps only its normal class for training."""
        return data

    def build(self, hp: dict, info: dict) -> dict[str, nn.Module]:
        """The family's modules, by name (e.g. generator, discriminator)."""
        raise NotImplementedError

    def optimizers(self, modules: dict[str, nn.Module], hp: dict) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, modules: dict[str, nn.Module], optimizers: dict, batch: dict[str, torch.Tensor],
                   hp: dict) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached losses named as in `loss_names`."""
        raise NotImplementedError

    def evaluate(self, modules: dict[str, nn.Module], hp: dict, evaluator, seed: int) -> EvalResult:
        """Sample-quality scores and the images to show. Default: FID/KID of generated samples
        (labels drawn like the held-out set's, for conditional families)."""
        fake = self.generate(modules, evaluator.n, hp, seed, labels=evaluator.labels)
        return EvalResult(evaluator.quality(fake), fake[:64])

    def rescoring_hp(self, hp: dict) -> dict:
        """The hyperparameters orchestrator.rescore evaluates with: as trained by default; a family
        whose sweep evaluations cut a cost (ddpm's fewer denoising steps) restores the full one."""
        return hp

    def rescore_cost(self, hp: dict) -> float:
        """What re-scoring one image costs against one image of the sweep's own evaluations (the
        sweep's estimate of its re-scoring time): 1 where both evaluate alike."""
        return 1.0

    def rescore_details(self, modules: dict[str, nn.Module], hp: dict, evaluator, seed: int) -> dict[str, float]:
        """Scores beyond `evaluate`'s that orchestrator.rescore records per seed (e.g. an interval
        or per-class values); default none. Sample checks (precision/recall, memorization) are the
        re-scorer's own, for every family whose evaluation generates images."""
        return {}

    def inference_network(self, modules: dict[str, nn.Module]) -> nn.Module:
        """The network whose parameters inference uses (COST_METRICS' `params`)."""
        return modules[self.inference_module]

    def inference_call(self, modules: dict[str, nn.Module], hp: dict, evaluator, n: int):
        """The family's main inference on up to `n` images at inference settings, its inputs made
        ready: (a call that runs it, how many images it handles). What `sample_ms` times. Default:
        generate (labels as the held-out set's, for conditional families)."""
        labels, settings = evaluator.labels[:n], self.rescoring_hp(hp)
        return (lambda: self.generate(modules, len(labels), settings, seed=0, labels=labels)), len(labels)

    # --- inference (each family implements what its `inference_modes` need) -----------------------
    @torch.no_grad()
    def generate(self, modules: dict[str, nn.Module], n: int, hp: dict, seed: int,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """`n` images in [-1, 1], reproducible for a given seed; `labels` for conditional families."""
        raise Unsupported(f"{self.name} does not generate images from noise")

    @torch.no_grad()
    def encode(self, modules: dict[str, nn.Module], images: torch.Tensor, hp: dict) -> torch.Tensor:
        """Latent vectors of images (for interpolation and latent arithmetic)."""
        raise Unsupported(f"{self.name} has no encoder")

    @torch.no_grad()
    def decode(self, modules: dict[str, nn.Module], z: torch.Tensor, hp: dict) -> torch.Tensor:
        """Images in [-1, 1] from latent vectors."""
        raise Unsupported(f"{self.name} has no decoder from a latent vector")

    def latent_dim(self, hp: dict) -> int:
        return int(hp["latent_dim"])

    @torch.no_grad()
    def translate(self, modules: dict[str, nn.Module], images: torch.Tensor, hp: dict,
                  direction: str = "a2b") -> torch.Tensor:
        """Source-domain images -> target-domain images (a2b), or back (b2a) where the family can."""
        raise Unsupported(f"{self.name} does not translate images")

    @torch.no_grad()
    def anomaly_score(self, modules: dict[str, nn.Module], images: torch.Tensor, hp: dict) -> torch.Tensor:
        """One score per image, higher = more anomalous."""
        raise Unsupported(f"{self.name} does not score anomalies")


@torch.no_grad()
def inference_cost(family: ModelFamily, modules: dict[str, nn.Module], hp: dict, evaluator) -> dict[str, float]:
    """COST_METRICS of a trial's model: a property of its configuration, not of its training, so
    the loop measures it once per run of a trial. One small call first, so one-off start-up
    (kernel choice, allocations) is not timed. Trials, evaluations and the driver share the cores,
    and what they take only ever adds time: the fastest of several batches is the least disturbed
    reading (as Python's timeit advises), and cheap models, the most disturbed, get the most tries."""
    import time

    params = sum(p.numel() for p in family.inference_network(modules).parameters())
    family.inference_call(modules, hp, evaluator, 2)[0]()
    run, images = family.inference_call(modules, hp, evaluator, COST_BATCH)
    fewest, most = COST_REPEATS
    times: list[float] = []
    while len(times) < fewest or (sum(times) < COST_SECONDS and len(times) < most):
        start = time.perf_counter()
        run()
        if evaluator.device.type == "cuda":
            torch.cuda.synchronize(evaluator.device)
        times.append(time.perf_counter() - start)
    return {"params": float(params), "sample_ms": 1000 * min(times) / images}


def pixel_device(modules: dict[str, nn.Module]) -> torch.device:
    return next(next(iter(modules.values())).parameters()).device


def seeded_normal(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """Standard normal draws that are the same for a seed on every device."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
