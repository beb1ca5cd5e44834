# Everything a fresh clone needs: `make demo`, `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The cudasim stage runs the CUDA kernels on the CPU simulator, in a process of its own.
PYTEST := $(PY) -m pytest
# A second numerical path on one machine: the device tests again with oneDNN capped below the
# CPU's best ISA, so its float32 kernels round differently (a tolerance that holds on one CPU
# only fails here first). AVX2 where the CPU has AVX-512, else SSE4.1.
ONEDNN_SECOND_ISA := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo AVX2 || echo SSE41)

.PHONY: setup demo test install-check bench bench-quick lint clean gpu-check gpu-check-dry gpu-wheels

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,torch,bench,dataset,ray-serve]'
	# D-RISE's reference for the detection tests and benchmarks. It asks for matplotlib<3.7,
	# which has no build for NumPy 2: installed without its requirements (it imports without
	# them), so pip keeps this environment's matplotlib.
	$(PY) -m pip install -q --no-deps 'vision-explanation-methods>=0.1.1'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m limefast.demo

# limefast as users install it: the wheel in a clean venv, used from outside the checkout.
install-check: $(STAMP)
	$(PY) tests/check_wheel.py

test: $(STAMP) install-check
	$(PYTEST) -q -m "not cudasim" tests
	ONEDNN_MAX_CPU_ISA=$(ONEDNN_SECOND_ISA) $(PYTEST) -q -m "not cudasim" tests/test_device.py
	NUMBA_ENABLE_CUDASIM=1 $(PYTEST) -q -m cudasim tests
	$(MAKE) notebooks

bench: $(STAMP)
	mkdir -p bench-results
	$(PYTEST) benchmarks -q -s --benchmark-columns=median,iqr,rounds \
		--benchmark-json=bench-results/pytest-benchmark.json
	$(PY) -m limefast.benchsuite --out bench-results

bench-quick: $(STAMP)
	$(PY) -m limefast.benchsuite --quick --out bench-results

# On a lent GPU machine: its own python3 (no venv, no network); one JSON file, one summary line.
gpu-check:
	python3 benchmarks/gpu_check.py gpu-check.json

# The same script on this CPU, small, to know it works before a GPU is lent.
gpu-check-dry: $(STAMP)
	$(PY) benchmarks/gpu_check.py gpu-check-dry.json --dry-run

# On a CPU machine with the registries: lime's wheel for the GPU machine, into .whl/.
gpu-wheels: $(STAMP)
	$(PY) -m pip wheel -q --no-deps lime==0.2.0.1 -w .whl

# The docs site (Sphinx, pydata-sphinx-theme, myst-nb) in docs/_build/html: the tutorials run
# in it, and a warning (a broken link, a missing reference, a docstring) fails it.
.PHONY: docs notebooks
DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	rm -rf docs/_build
	$(PY) docs/execute_notebooks.py docs/_build/.jupyter_cache docs/tutorials
	$(PY) -m sphinx -b html -W --keep-going docs docs/_build/html

# Every tutorial notebook top to bottom (nbmake; a cell over 120 s fails), the time of each.
notebooks: $(DOCS_STAMP)
	$(PYTEST) -q -p no:cacheprovider --nbmake --nbmake-timeout=120 --durations=0 docs/tutorials

lint: $(STAMP)
	$(PY) -m ruff check limefast kernels tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks bench-results .gpu-site gpu-check*.json
	rm -rf docs/_build docs/jupyter_execute
