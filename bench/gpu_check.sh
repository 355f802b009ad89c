#!/usr/bin/env bash
# The GPU path in one command (issue 19; docs/benchmarks.md row 7), within 8 minutes on one GPU:
# installs what it needs, runs the CUDA-relevant tests, then bench/gpu_check.py (step throughput of
# dcgan, cyclegan and ddpm at 64x64 in fp32 / bf16 / bf16 + channels_last, a 4-trial sweep with two
# trials per GPU, a 2-worker DDP trial on one GPU) and prints its table. Results go to $OUT (the
# device tool's folder) or bench/results/. Where there is no CUDA GPU it says so in one line, exit 0.
#
# On a GPU machine that can fetch nothing, first run bench/gpu_wheels.sh here and carry .whl.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
if ! timeout 50 "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU here (torch sees none, or is missing); nothing to measure"
  exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_TRAIN_V2_ENABLED=1
if ! "$PY" -c 'import ray, optuna, tensorboardX' 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check: Ray or Optuna is missing and .whl/ is empty: run bench/gpu_wheels.sh and carry .whl" >&2
    exit 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/gpu-site"
fi
out=${OUT:-bench/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== tests (CUDA-relevant, on the GPU where they use one)"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_precision.py -k "not sweep" 2>&1 | tail -3
echo "== bench/gpu_check.py"
timeout 330 "$PY" bench/gpu_check.py --device cuda --out "$out" 2>&1 | tee "$out/gpu_check.txt"
