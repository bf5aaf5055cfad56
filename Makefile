# Quick start:  make run   (the main job)   |   make test   (the test suite)
# Both first run `make install`, which creates or updates .venv from requirements.txt (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench data clean-runs

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The paper's central experiment: cfm, GFNN, depth 6, width 100, Adam 1e-3, 600 epochs, seed 666,
# measured as the paper did (train-mode BatchNorm over batches of 100; see README "Measuring mode").
# One CPU thread: per-op overhead dominates this small network and a second thread only adds sync.
run: install
	$(PY) representation_dynamics_terminal.py data=cfm model=GFNN layer_num=6 hidden_size=100 \
		optimization=adam lr=1e-3 epochs=600 seed=666 analysis.bn_mode=train_batches threads=1

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/bench_run.py

data: install
	$(PY) data.py data=cfm
