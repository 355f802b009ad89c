# The two commands of the quick start: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test bench bench-baseline bench-anomaly clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -qq --upgrade pip 2>&1 | grep -v 'is ignored' || true
	$(PIP) install -qq -e '.[test]' 2>&1 | grep -v 'is ignored' || true
	$(PY) -c "import torch, torchvision, ray, optuna, torchmetrics, trainables, orchestrator"
	touch $@

# Fashion-MNIST from Debian's package when we may install it; otherwise the sweep looks in
# --data-root and then tries torchvision's download, and says how to get the data if all fail.
data:
	@test -d $(FASHION) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)); } || \
	  echo "note: $(FASHION) is missing; the sweep will try other sources"

demo: setup data
	$(PY) -m orchestrator.sweep dcgan --quick

test: setup
	$(PY) -m pytest -q --durations=15 tests

# benchmarks (not tests): results printed and written to bench/results/, recorded in docs/benchmarks.md
bench: setup data
	$(PY) bench/throughput.py
	$(PY) bench/sweeps.py --only data scaling  # row 3 over 3 seeds: make bench-baseline
	$(PY) bench/storage.py
	$(PY) bench/dashboard.py

# the sweep against the family's defaults at equal compute, 3 seeds (about 80 min on 2 cores;
# docs/benchmarks.md rows 3 and 9): too long for `make bench`'s 30 minutes
bench-baseline: setup data
	$(PY) bench/baseline.py --model dcgan

# one-class ROC-AUC, every Fashion-MNIST class swept and its winner re-scored (docs/results.md;
# about 2 min a class on 2 cores): too long for `make bench`
bench-anomaly: setup data
	$(PY) bench/anomaly.py --write-docs

clean:
	rm -rf experiments .pytest_cache
