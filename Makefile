# make repro [PROFILE=tiny|smoke|sdxl] [JOBS=2]  set up, regenerate/check data/, run the DVC pipeline (JOBS: the
#                                   controls and Table 1's fine-tuning runs that many at a time, as DVC experiments)
# make test                         set up the environment, lint (ruff), check dvc.yaml's derived deps, run the tests
#                                   and the SDXL step benchmark at its small size (keeps it working without a GPU)
# make tune [JOBS=2]                the per-method search (tuning/dvc.yaml) as DVC experiments, then its table
#                                   results/tuning.csv (run `make repro` first: the cells start from its models)
# make verify                       a fresh `make repro`, then every result number that moved beyond its tolerance and
#                                   every verdict that changed against the committed results (exit 1 on a changed verdict)
# make lab-check                    every notebook run top to bottom in JupyterLab in headless Chromium (smoke profile's
#                                   copy): no error, progress drawn as widgets (needs apt's chromium chromium-driver)
# make setup | data | lab | bench | lock | clean
PROFILE ?= tiny
JOBS ?= 2
# torch threads per experiment: the cores shared out (2 runs of 2 threads each on 2 cores ran 5x slower per step)
THREADS ?= $(shell $(PYTHON) -c 'import os; print(max(1, (os.cpu_count() or 1) // $(JOBS)))')
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup data repro verify test tune lab lab-check bench clean lock

setup: $(VENV)/.installed

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
# Then every other package at the exact version and hash of requirements.lock (the versions that made the
# committed results), and the project itself without resolving anything; `pip check` proves the set consistent.
$(VENV)/.installed: pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python >= 3.11 is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (replication)" >/dev/null
	touch $@

data: setup
	$(PY) -m replication.data ensure

# The default profile runs in place and renders the README's results block; any other profile runs in an isolated
# copy under .profiles/<profile>/, so the committed results, figures, dvc.lock and params.yaml stay as they are.
repro: setup data
	$(PY) -m replication.pipeline repro --profile $(PROFILE) --jobs $(JOBS)

# The fresh results against HEAD's (python -m replication.verify --ref REF to compare with another commit).
verify: repro
	$(PY) -m replication.verify

test: setup data
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m replication.pipeline check
	$(PY) -m pytest -q
	$(PY) benchmarks/bench_sdxl_step.py --size small --batch 1 --n 2 --m 2 --gen-steps 2 --steps 1 --warmup 0

# One experiment per cell of params.yaml's tune.grid, queued (`dvc exp run --queue`) and run JOBS at a time by DVC's
# own queue (`dvc queue start`); `collect` reads `dvc exp show --json` into results/tuning.csv and results/tuning.json.
tune: setup data
	$(PY) -m replication.recipes.tuning queue
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/dvc queue start -j $(JOBS)
	$(PY) -m replication.recipes.tuning wait
	$(PY) -m replication.recipes.tuning collect

lab: setup data
	$(VENV)/bin/jupyter lab notebooks/

# The browser driver lives in its own environment: it is a check of the notebooks, not a dependency of the project.
lab-check: setup data
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		{ echo "lab-check needs Chromium and its driver: apt-get install chromium chromium-driver"; exit 2; }
	test -x .venv-browser/bin/python || { $(PYTHON) -m venv .venv-browser && .venv-browser/bin/pip install -q selenium==4.35.0; }
	$(PY) -m replication.pipeline repro --profile smoke  # the copy the notebooks run in, brought up to date
	.venv-browser/bin/python tools/lab_check.py --root .profiles/smoke --jupyter $(VENV)/bin/jupyter

bench: setup data
	$(PY) benchmarks/bench_sharpening_step.py
	$(PY) benchmarks/bench_methods.py
	$(PY) benchmarks/bench_parallel_runs.py
	$(PY) benchmarks/bench_sdxl_step.py

clean:
	rm -rf .checkpoints .cache executed .profiles

# Regenerate requirements.lock: the newest versions pyproject.toml's ranges admit, resolved by pip in a scratch
# venv beside the pinned torch, then hashed by uv. Commit the lock together with results made by it.
# Left out of the lock: rfc3987-syntax (and lark, which only it needs), pulled in by jsonschema's optional IRI format
# check through jupyter-events. It builds its grammar at import: 1.4 s of papermill's 1.9 s start, paid by every
# stage (python-jsonschema issue 1428). Nothing here validates IRIs; jsonschema skips that check without it, and
# `pip check` stays clean.
LOCK_SKIP := rfc3987-syntax|lark
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q torch==2.13.0 uv
	.lock-venv/bin/python -m pip install -q -e ".[dev]"
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -viE '^(torch|uv|$(LOCK_SKIP))==' > .lock-venv/freeze.txt
	.lock-venv/bin/uv pip compile .lock-venv/freeze.txt --no-deps --generate-hashes --no-header --no-annotate \
		--python-version $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version())') \
		-o requirements.lock
	rm -rf .lock-venv
