"""--precision and --channels-last on the CPU: bf16 autocast really runs the step in bf16, fp16 goes
through a GradScaler (which skips a step whose gradients overflowed), and a real sweep records the
precision in sweep.json and in its checkpoints."""

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, family_sweep, run_cli
from trainables.datasets import load_dataset
from trainables.family import loss_scaling
from trainables.loop import autocast, index_batches, next_batch
from trainables.models import get_family

CPU = torch.device("cpu")


def one_step(name: str, precision: str, channels_last: bool = False, scaler=None, device: torch.device = CPU):
    """One seeded training step of family `name` on digits; returns (losses, parameters before, after, batch)."""
    family = get_family(name)
    hp = dict(family.defaults)
    data = family.prepare_data(load_dataset("digits", None, None, None), hp)
    torch.manual_seed(0)
    modules = {k: m.to(device) for k, m in family.build(hp, data.info()).items()}
    if channels_last:
        modules = {k: m.to(memory_format=torch.channels_last) for k, m in modules.items()}
    optimizers = family.optimizers(modules, hp)
    batch = next_batch(data, family, index_batches(len(data.train_x), hp["batch_size"], 0, 1, 0, 0), None, device,
                       channels_last)
    before = [p.detach().clone() for m in modules.values() for p in m.parameters()]
    with autocast(device, precision), loss_scaling(scaler):
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU (bench/gpu_check.sh runs this on one)")
@pytest.mark.parametrize("name", ["dcgan", "vae", "ddpm"])  # cyclegan: in bench/gpu_check.py
@pytest.mark.parametrize("precision,channels_last", [("fp32", False), ("bf16", True), ("fp16", False)])
def test_a_step_on_the_gpu(name, precision, channels_last):
    cuda = torch.device("cuda")
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    losses, before, after, batch = one_step(name, precision, channels_last, scaler, cuda)
    assert batch["x"].is_cuda and all(p.is_cuda for p in after)
    assert all(math.isfinite(float(v)) for v in losses.values()), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


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


def test_gpu_check_says_in_one_line_that_there_is_no_gpu():
    """bench/gpu_check.sh on a machine without CUDA: one line, exit 0, within 60 s."""
    start = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["gpu_check: no CUDA GPU here (torch sees none, or is missing); "
                                                "nothing to measure"], proc.stdout
    assert time.monotonic() - start < 60


def test_gpu_check_measures_the_step_on_the_cpu(tmp_path):
    """bench/gpu_check.py's throughput part on the CPU, 2 steps of the two-domain family (the GPU
    runs all three): it runs every mode and writes its table."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--steps", "2",
                           "--skip-sweeps", "--families", "cyclegan", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["throughput"]
    assert [(r["precision"], r["channels_last"]) for r in rows] == [("fp32", False), ("bf16", False), ("bf16", True)]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert "| `cyclegan` | 16 |" in proc.stdout
