# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs the CPU build of torch and genlab, trains flow matching on
#               two moons (under 2 minutes on 2 cores) and writes runs/demo/
#   make test   the same set-up, then lint, format check and the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch: a plain `torch` requirement would pull a multi-GB CUDA build.
# Pass TORCH=... to install another build (e.g. a CUDA one on a GPU machine).
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.genlab-installed
PYTEST_ARGS ?= -n 2 --dist loadgroup --durations=25

.PHONY: install demo test test-docs test-fast lint format bench bench-env bench-peers clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/genlab train configs/flow-matching-moons.yaml --out runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

test: lint browser
	$(PY) -m pytest -m "not docs" $(PYTEST_ARGS)

# Headless Chromium for the report's browser test (tests/test_report.py), installed where it can be
# (Debian, as root); elsewhere that one test is skipped and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (apt-get) for the browser test"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } || \
	  echo "could not install Chromium: the browser test will be skipped"; \
	else echo "no Chromium and no apt-get as root: the browser test will be skipped"; fi

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not docs" $(PYTEST_ARGS)

# Every genlab command in README.md, docs/*.md and the config headers, run at a tiny size (long)
test-docs: $(STAMP)
	$(PY) -m pytest -m docs $(PYTEST_ARGS)

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Benchmarks run in their own environment: peers (torchcfm, zuko, ...) are never runtime dependencies.
BENCH_VENV ?= .bench-venv
$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet "$(TORCH)"
	$(BENCH_VENV)/bin/pip install --quiet -e .
	$(BENCH_VENV)/bin/pip install --quiet --no-deps -r bench/requirements.txt
	touch $@

bench-env: $(BENCH_VENV)/.installed

# genlab beside the libraries people use, on MNIST at equal CPU time (docs/peers.md)
bench-peers: bench-env
	$(BENCH_VENV)/bin/python bench/peers.py --pair ddpm --minutes 10 --seeds 2
	$(BENCH_VENV)/bin/python bench/peers.py --pair fm --minutes 5 --seeds 2
	$(BENCH_VENV)/bin/python bench/peers.py --pair vae --minutes 3 --seeds 1

bench: bench-env
	$(BENCH_VENV)/bin/python bench/flow_matching_2d.py
	$(BENCH_VENV)/bin/python bench/ot_coupling.py
	OMP_NUM_THREADS=1 $(BENCH_VENV)/bin/python bench/flows_2d.py
	OMP_NUM_THREADS=1 $(BENCH_VENV)/bin/python bench/diffusion_2d.py
	OMP_NUM_THREADS=1 $(BENCH_VENV)/bin/python bench/eval_reference.py
