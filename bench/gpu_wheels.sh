#!/usr/bin/env bash
# Run here (with internet to the package registry), before bench/gpu_check.sh on a GPU machine that
# can fetch nothing: downloads into .whl/ the Python 3.12 wheels that machine lacks (it has torch,
# numpy, pandas, pyarrow, scikit-learn, torchmetrics, safetensors, pytest...; Ray, Optuna and their
# needs it has not). Ray's wheel (79 MB) is repacked without its Java jars and source maps (~45 MB)
# so the working tree that travels stays under the device's 64 MiB. Carry .whl with the call.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d .whl ray==2.60.0 "optuna>=5,<6" alembic sqlalchemy mako colorlog tensorboardX pydantic pydantic-core \
  annotated-types typing-inspection jsonschema jsonschema-specifications referencing rpds-py tzdata
python3 - <<'PY'
import pathlib, zipfile
wheel = next(pathlib.Path(".whl").glob("ray-*.whl"))
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
    for item in src.infolist():
        if not (item.filename.startswith("ray/jars/") or item.filename.endswith(".js.map")):
            out.writestr(item, src.read(item.filename))
slim.replace(wheel)
PY
du -sh .whl
