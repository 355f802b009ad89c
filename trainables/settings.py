"""A sweep's settings, typed: built once by orchestrator.sweep, saved in sweep.json (SweepSpec, with
Resources), read back by --resume, and handed to the trials (TrialSettings, read by
trainables.ray_trial and the loop). Imports neither torch nor Ray.

    SweepSpec         sweep.json: everything that defines the sweep
    TrialSettings     what every trial of a sweep shares: the loop's budget, resources, checkpointing
      LoopSettings    the training loop's budget and cadence
      Resources       workers, CPUs and GPUs per trial (sweep.json's "resources", reused by --resume)
    CheckpointConfig  a checkpoint's config.json: what `infer` needs to rebuild the model, and where
                      the checkpoint came from; one per trial run, serialised in one place (to_json)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from trainables.layout import FINAL_FROM, FINAL_START, FINAL_UNTIL


# --fid-features: the feature network FID/KID measure in (trainables.features makes each)
UNLABELED_DEFAULT = "simclr"  # for data without labels: chosen by bench/metric_validity.py's table (docs/results.md)
FEATURE_KINDS = {
    "auto": f"the dataset's classifier where it has labels, else {UNLABELED_DEFAULT} (the default)",
    "classifier": "a classifier of the dataset's labels; of its images' rotations where it has none (RotNet)",
    "rotation": "a classifier of the images' rotations (and domains): self-supervised, needs no labels",
    "simclr": "contrastive self-supervision on the dataset's own images (SimCLR): needs no labels",
    "random": "a randomly initialised network of the classifier's layout, never trained",
    "inception": "Inception-v3 (torch-fidelity's weights, downloaded or in $TORCH_HOME): published FIDs",
}
WEIGHTS_SUFFIX = ".safetensors"  # --fid-features FILE.safetensors: a torchvision backbone's weights (the user's)


@dataclass(frozen=True)
class Resources:
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    torch_trainer: bool = False  # one-worker trials under a TorchTrainer too

    @property
    def in_process(self) -> bool:
        """Whether a trial trains in its own Tune process (one worker) rather than under a TorchTrainer."""
        return self.workers_per_trial == 1 and not self.torch_trainer

    @classmethod
    def from_json(cls, data: dict) -> Resources:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class LoopSettings:
    model: str
    seed: int
    max_steps: int
    eval_every: int  # steps between evaluations, each with a checkpoint
    log_every: int  # steps between loss reports
    eval_samples: int
    precision: str = "fp32"  # the training step's autocast: fp32, bf16 or fp16 (with a GradScaler)
    channels_last: bool = False  # modules and batches in NHWC memory layout (faster convolutions on GPUs)
    final_decay: bool = False  # a final-phase trial's learning rates fall linearly to 0 by its last step
    family_source: dict | None = None  # a family of the user's own: where it is imported from (trainables.models)
    family_class: Any = None  # one defined in __main__ (a notebook): the class, pickled by value to the trials


@dataclass(frozen=True)
class CheckpointConfig:
    """config.json of a checkpoint; the keys are those of every earlier version (infer reads them)."""
    model: str
    dataset: str
    shape: list
    data: dict  # the dataset's info and loader options, so infer reloads the same data
    feature_network: str
    experiment: str
    hp: dict = field(default_factory=dict)
    trial_id: str | None = None
    worker_nodes: list = field(default_factory=list)  # the Ray node of each worker
    started_from: dict | None = None  # PBT: the Tune checkpoint this run of the trial started from
    precision: str | None = None  # what the weights were trained in (the weights are saved in fp32)
    family_source: dict | None = None  # a family of the user's own: its module (and file), for best and infer

    def to_json(self, step: int, code_version: str) -> dict:
        config = {k: v for k, v in asdict(self).items() if v is not None}
        return {**config, "step": step, "code_version": code_version}

    def but(self, **changes: Any) -> CheckpointConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class TrialSettings:
    loop: LoopSettings
    resources: Resources
    checkpoint: CheckpointConfig  # without the trial's own fields (hp, trial_id, ...)
    checkpoint_root: str  # STORAGE/NAME/checkpoints, a path or URI
    keep_checkpoints: int | None  # the best K by the objective, plus the latest
    max_failures: int  # restarts of a failed TorchTrainer run
    report_checkpoints: bool  # PBT: Tune gets the checkpoints too, to restart trials from
    data_ref: Any = None  # Ray object refs of the dataset and the FID feature network
    feature_ref: Any = None


@dataclass(frozen=True)
class FinalStart:
    """Where a trial of the final phase starts: a search trial's best checkpoint (a path or URI),
    trained on to step `until`. Tune gives a trial nothing of its own but its config, so it travels
    there under one key (FINAL_START), beside the hyperparameters; `split` takes it out."""
    checkpoint: str
    until: int

    def config(self, hp: dict) -> dict:
        return {**hp, FINAL_START: asdict(self)}

    @classmethod
    def split(cls, config: dict) -> tuple[dict, FinalStart | None]:
        """A trial's hyperparameters and its final start (None for a search trial). Experiments
        written before 0.3 kept the start as two keys, FINAL_FROM and FINAL_UNTIL."""
        hp = dict(config)
        start, old_from, old_until = hp.pop(FINAL_START, None), hp.pop(FINAL_FROM, None), hp.pop(FINAL_UNTIL, None)
        try:
            if isinstance(start, dict):
                return hp, cls(str(start["checkpoint"]), int(start["until"]))
            if isinstance(old_from, str):
                return hp, cls(old_from, int(old_until))
        except (KeyError, TypeError, ValueError):
            pass
        return hp, None


@dataclass(frozen=True)
class TrialRun:
    """One run of one trial: the sweep's settings and this trial's hyperparameters."""
    settings: TrialSettings
    hp: dict  # the family's defaults, overridden by the trial's
    checkpoint: CheckpointConfig  # with this trial's own fields
    start_from: Any = None  # PBT: the Tune checkpoint this run starts from (maybe another trial's)


@dataclass
class SweepSpec:
    """sweep.json. Written once when the sweep starts (the fields after `name` are filled in then),
    read back by `--resume`; the experiment's readers (trainables.experiment) take it as plain JSON."""
    model: str
    dataset: str
    data_root: str | None
    subset: int | None
    trials: int
    max_steps: int
    eval_every: int
    log_every: int
    eval_samples: int
    space_toml: str  # the search space's text, so --resume and the dashboard read the space searched
    space_file: str
    objective: str
    mode: str
    keep_checkpoints: int
    scheduler: str = "asha"
    searcher: str = "tpe"
    seed: int = 0
    fid_features: str = "auto"  # FEATURE_KINDS
    feature_check: bool = True  # the feature space is checked before Ray starts (--skip-feature-check: not)
    precision: str = "fp32"
    channels_last: bool = False
    data_options: dict = field(default_factory=dict)  # the loader's options, so --resume reloads the same data
    overrides: dict = field(default_factory=dict)  # --set KEY=VALUE
    metric_descriptions: dict = field(default_factory=dict)
    pbt_mutates: list | None = None  # the learning rates PBT mutates
    baseline: dict | None = None  # the family's defaults of the searched hyperparameters: trial 1
    final_top: int = 1  # the final phase: the top K configurations continue from their best checkpoints
    final_steps: int = 0  # for N more steps each (0: no final phase)
    budget: int | None = None  # --budget: trial-steps of search and final phase together
    search_budget: int | None = None  # --search-horizon long: the search stops after this many trial-steps
    warm_start: list = field(default_factory=list)  # --warm-start: the experiments whose trials seeded the study
    objectives: list | None = None  # --objectives: [objective, cost metric], a Pareto search (None: one objective)
    grace_period: int | None = None  # ASHA's first rung (None: a quarter of max_steps, at least eval_every)
    reduction_factor: int = 2  # ASHA keeps the top 1/N at each rung
    startup_trials: int | None = None  # TPE's random start (None: a third of the trials, 2..10)
    multivariate: bool | None = None  # TPE models the hyperparameters jointly (None: Optuna's default)
    final_decay: bool = False  # the final phase's learning rates fall linearly to 0 (--final-decay)
    final_halving: bool = False  # the final phase as successive halving, the defaults among its candidates
    family_source: dict | None = None  # a family of the user's own: its module (and file); None: built in
    run_options: dict = field(default_factory=dict)  # how it runs (orchestrator.spec.RunOptions), reused by --resume
    name: str = ""
    feature_network: dict = field(default_factory=dict)  # the FID feature network's name and facts
    dataset_info: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)  # Resources
    created: str | None = None
    max_concurrent: int | None = None  # worked out by each run of the sweep (not saved)

    REQUIRED = ("model", "name", "dataset", "data_root", "subset")  # what --resume can't do without

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "max_concurrent" and (v is not None or k in self.REQUIRED)}

    @classmethod
    def from_json(cls, data: dict) -> SweepSpec:
        """A sweep.json of any earlier version: fields it lacks take their defaults, unknown ones are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and (v is not None or k in ("data_root", "subset"))})
