"""--precision and --channels-last on the CPU: bf16 autocast really runs the step in bf16, fp16 goes
through a GradScaler (which skips a step whose gradients overflowed), and a real sweep records the
precision in sweep.json and in its checkpoints."""

import json
import math

import pytest
import torch

from conftest import family_sweep, run_cli
from trainables.datasets import load_dataset
from trainables.family import loss_scaling
from trainables.loop import autocast, index_batches, next_batch
from trainables.models import get_family

CPU = torch.device("cpu")


def one_step(name: str, precision: str, channels_last: bool = False, scaler=None):
    """One seeded training step of family `name` on digits; returns (losses, parameters before, after)."""
    family = get_family(name)
    hp = dict(family.defaults)
    data = family.prepare_data(load_dataset("digits", None, None, None), hp)
    torch.manual_seed(0)
    modules = family.build(hp, data.info())
    if channels_last:
        modules = {k: m.to(memory_format=torch.channels_last) for k, m in modules.items()}
    optimizers = family.optimizers(modules, hp)
    batch = next_batch(data, family, index_batches(len(data.train_x), hp["batch_size"], 0, 1, 0, 0), None, CPU,
                       channels_last)
    before = [p.detach().clone() for m in modules.values() for p in m.parameters()]
    with autocast(CPU, precision), loss_scaling(scaler):
        losses = family.train_step(modules, optimizers, batch, hp)
    after = [p.detach() for m in modules.values() for p in m.parameters()]
    return losses, before, after, batch


def test_bf16_autocast_computes_in_bf16_on_the_cpu():
    conv = torch.nn.Conv2d(1, 4, 3)
    with autocast(CPU, "bf16"):
        assert conv(torch.randn(2, 1, 8, 8)).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert conv(torch.randn(2, 1, 8, 8)).dtype == torch.float32


@pytest.mark.parametrize("name", ["dcgan", "ddpm"])  # ddpm: clips gradients (unscaled first under fp16)
@pytest.mark.parametrize("precision,channels_last", [("bf16", False), ("bf16", True), ("fp16", False)])
def test_a_mixed_precision_step_trains(name, precision, channels_last):
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    losses, before, after, batch = one_step(name, precision, channels_last, scaler)
    assert all(math.isfinite(float(v)) for v in losses.values()), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    nhwc = [p.stride(1) == 1 for p in after if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]
    assert nhwc and all(nhwc) == channels_last and any(nhwc) == channels_last
    assert all(p.dtype == torch.float32 for p in after)  # weights stay fp32; only the compute is mixed


def test_fp16_steps_go_through_the_grad_scaler():
    """A scale so large that the scaled gradients overflow: the scaler skips every update."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 120)
    _, before, after, _ = one_step("vae", "fp16", scaler=scaler)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    scaler.update()
    assert scaler.get_scale() < 2.0 ** 120


def test_a_bf16_channels_last_sweep_records_its_precision(ray_address, tmp_path):
    path = family_sweep(ray_address, tmp_path, "dcgan", "--dataset", "digits", "--precision", "bf16",
                        "--channels-last", "--keep-checkpoints", "1", trials=1, max_steps=20, eval_every=20)
    spec = json.loads((path / "sweep.json").read_text())
    assert (spec["precision"], spec["channels_last"]) == ("bf16", True)
    (checkpoint,) = path.glob("checkpoints/*/checkpoint_*")
    assert json.loads((checkpoint / "config.json").read_text())["precision"] == "bf16"
    assert math.isfinite(json.loads((checkpoint / "metrics.json").read_text())["fid"])
    out = tmp_path / "samples.png"
    proc = run_cli("orchestrator.infer", str(checkpoint), "sample", "--n", "4", "--out", str(out))
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
