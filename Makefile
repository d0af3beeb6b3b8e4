# cardscan: `make test` and `make demo` from a fresh clone; see README.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup dataset train test lint clean demo demo-deps

DEMO_PY_STAMP := $(VENV)/.demo-installed

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Everything: training stack, demo server, test tools.
$(STAMP): requirements.txt requirements-dev.txt requirements-demo.txt requirements-ultralytics.txt | $(VENV)/bin/python
	$(PY) -m pip install -r requirements-dev.txt
	$(PY) -m pip install --no-deps -r requirements-ultralytics.txt
	touch $(STAMP)

# The demo server alone (no torch): what `make demo` needs.
$(DEMO_PY_STAMP): requirements-demo.txt | $(VENV)/bin/python
	$(PY) -m pip install -r requirements-demo.txt
	touch $(DEMO_PY_STAMP)

# Generates the synthetic dataset only when dataset/ is absent (never overwrites a real one).
dataset: $(STAMP)
	@if [ -e dataset ]; then echo "dataset/ exists; leaving it alone"; \
	else $(PY) train/generate_dataset.py; fi

train: dataset
	$(PY) train/train.py $(TRAIN_ARGS)

# The web app: Python server deps, onnxruntime-web from the lock file, then serve.
DEMO_STAMP := demo/node_modules/.installed
$(DEMO_STAMP): demo/package.json demo/package-lock.json
	cd demo && npm ci --no-audit --no-fund
	touch $(DEMO_STAMP)

demo-deps: $(DEMO_PY_STAMP) $(DEMO_STAMP)

demo: demo-deps
	$(PY) demo.py $(DEMO_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) $(DEMO_STAMP) lint
	cd demo && node --test tests/
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) train/runs .pytest_cache .ruff_cache
