# make repro [PROFILE=tiny|smoke]   set up the environment, regenerate/check data/, run the DVC pipeline
# make test                         set up the environment and run the test suite
# make setup | data | lab | clean
PROFILE ?= tiny
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup data repro test lab bench clean

setup: $(VENV)/.installed

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python >= 3.11 is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (replication)" >/dev/null
	touch $@

data: setup
	$(PY) -m replication.data ensure

repro: setup data
	$(PY) -m replication.config set-profile $(PROFILE)
	$(PY) -m replication.config check
	dvc repro
	@if [ "$(PROFILE)" = tiny ]; then $(PY) -m replication.report compute && $(PY) -m replication.report readme; fi

test: setup data
	$(PY) -m pytest -q

lab: setup data
	$(VENV)/bin/jupyter lab notebooks/

bench: setup data
	$(PY) benchmarks/bench_sharpening_step.py
	$(PY) benchmarks/bench_methods.py
	$(PY) benchmarks/bench_parallel_runs.py

clean:
	rm -rf .checkpoints .cache executed
