"""The checkpoints a one-worker trial keeps (InProcessSession, trainables/ray_trial.py), on real files:
the same ones Ray Train's checkpoint manager keeps for a TorchTrainer trial. Whole sweeps that
use them: tests/test_sweep.py (--keep-checkpoints, resume) and tests/test_faults.py (restarts);
the same on a real S3 server: tests/test_s3.py."""

import json
import math

from trainables.layout import COMPLETE
from trainables.ray_trial import InProcessSession
from trainables.settings import CheckpointConfig, LoopSettings, Resources, TrialRun, TrialSettings


def session(root, trial_id: str, keep: int, objective: str = "fid", mode: str = "min") -> InProcessSession:
    """The session of one run of trial `trial_id` whose checkpoints go under `root` (a path or URI)."""
    settings = TrialSettings(
        loop=LoopSettings(model="dcgan", seed=0, max_steps=10, eval_every=5, log_every=5, eval_samples=10),
        resources=Resources(), checkpoint=CheckpointConfig("dcgan", "digits", [1, 16, 16], {}, "classifier", "x"),
        checkpoint_root=str(root), keep_checkpoints=keep, max_failures=0, report_checkpoints=False)
    return InProcessSession(TrialRun(settings, {}, settings.checkpoint.but(trial_id=trial_id)), objective, mode)


def checkpoint(trial, second: int, step: int, fid: float | None, complete: bool = True):
    """A checkpoint folder named as Ray Train names them, written `second`s after midnight; with
    its completion marker unless `complete` is False (a writer died half-way)."""
    folder = trial / f"checkpoint_2026-01-01_00-00-{second:02d}.000000"
    folder.mkdir(parents=True)
    if fid is not None:
        (folder / "metrics.json").write_text(json.dumps({"step": step, "fid": fid}))
    if complete:
        (folder / COMPLETE).write_text("{}")
    return folder.name


def test_keeps_the_best_by_the_objective_and_the_latest_and_resumes_from_the_latest(tmp_path):
    trial = tmp_path / "abc123"
    names = [checkpoint(trial, 1, 100, 50.0), checkpoint(trial, 2, 200, 30.0), checkpoint(trial, 3, 300, 40.0),
             checkpoint(trial, 4, 400, math.nan)]  # the latest: unscored (NaN), worst by the objective
    damaged = checkpoint(trial, 5, 500, None)  # no metrics.json: not ours or damaged, never resumed from
    half = checkpoint(trial, 6, 600, 10.0, complete=False)  # a run died while saving it: no marker
    (trial / ".staging-checkpoint_2026-01-01_00-00-07.000000").mkdir()  # the same, from an older version
    running = session(tmp_path, "abc123", 2, "fid", "min")
    assert not (trial / half).exists()  # the half-written ones are cleared when the trial restarts
    assert not list(trial.glob(".staging-*"))
    with running.own_checkpoint() as folder:
        assert folder.name == names[3]  # the latest complete one, though its score is the worst
    running._prune()
    assert sorted(p.name for p in trial.iterdir()) == [names[1], names[2], names[3], damaged]


def test_max_mode_keeps_the_highest_scores(tmp_path):
    trial = tmp_path / "t"
    names = [checkpoint(trial, s, 10 * s, auc) for s, auc in ((1, 0.9), (2, 0.6), (3, 0.8), (4, 0.7))]
    for f in trial.iterdir():  # score as vae_anomaly does
        metrics = json.loads((f / "metrics.json").read_text())
        (f / "metrics.json").write_text(json.dumps({"step": metrics["step"], "auroc": metrics["fid"]}))
    running = session(tmp_path, "t", 1, "auroc", "max")
    running._prune()
    assert sorted(p.name for p in trial.iterdir()) == [names[0], names[3]]  # the best (0.9) and the latest


def test_checkpoints_from_before_the_marker_count_as_complete(tmp_path):
    """Version 0.1.0 wrote no marker (its local checkpoints were complete once renamed): resuming
    such an experiment must neither delete nor ignore them. An unmarked 0.2.0 one is half-written."""
    trial = tmp_path / "old"
    old = checkpoint(trial, 1, 100, 50.0, complete=False)
    half = checkpoint(trial, 2, 200, 40.0, complete=False)
    for name, version in ((old, "0.1.0"), (half, "0.2.0")):
        (trial / name / "config.json").write_text(json.dumps({"code_version": version}))
        (trial / name / "model.safetensors").write_bytes(b"weights")
    running = session(tmp_path, "old", 2, "fid", "min")
    assert sorted(p.name for p in trial.iterdir()) == [old]
    with running.own_checkpoint() as folder:
        assert folder.name == old
