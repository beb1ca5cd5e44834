# Everything a fresh clone needs: `make demo`, `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two stamps: `make demo` waits only for limefast and what the demo needs (torch, lime);
# `make test` and the rest add the other extras on top.
DEMO_STAMP := $(VENV)/.demo-stamp
STAMP := $(VENV)/.installed-stamp
# No bytecode compiled by pip (every file of every package, torch's thousands included, on one
# core). `make demo` waits for none: Python writes it for the modules the demo imports, when it
# first does (uv's way too); so the environment's PYTHONDONTWRITEBYTECODE is not passed on here,
# or every process would compile its imports again. The full install compiles all of it on every
# core, so that no test's subprocess (a server with a deadline to get ready) compiles its imports.
PIP_INSTALL := $(PY) -m pip install -q --no-compile
COMPILE_ALL := $(PY) -c "import compileall, sys; compileall.compile_dir(sys.argv[1], quiet=2, \
	workers=0)" $(VENV)/lib
unexport PYTHONDONTWRITEBYTECODE
# The cudasim stage runs the CUDA kernels on the CPU simulator, in processes of their own.
PYTEST := $(PY) -m pytest
# The suite on every core (pytest-xdist, up to 4 workers; `make test JOBS=0`: one process). The
# whole suite goes a test file to a worker, so that a module's fixtures (a trained model, a
# server, a Ray session) are made once; the one-file stages go a test to a worker. Not for the
# benchmarks: pytest-benchmark times nothing under xdist.
JOBS ?= auto --maxprocesses 4
TEST := $(PYTEST) -n $(JOBS)
# `make suite TESTS=tests/test_cli.py`: the suite's stage on some files only.
TESTS ?= tests
# A second numerical path on one machine: the device tests again with oneDNN capped below the
# CPU's best ISA, so its float32 kernels round differently (a tolerance that holds on one CPU
# only fails here first). AVX2 where the CPU has AVX-512, else SSE4.1.
ONEDNN_SECOND_ISA := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo AVX2 || echo SSE41)

.PHONY: setup demo test suite install-check install-check-beside bench bench-quick lint clean gpu-check gpu-check-dry gpu-wheels

# The venv, with a current pip, once.
VENV_NEW := test -x $(PY) || { $(PYTHON) -m venv $(VENV) && \
	$(PIP_INSTALL) --upgrade pip setuptools wheel; }

$(DEMO_STAMP): pyproject.toml setup.py
	$(VENV_NEW)
	$(PIP_INSTALL) -e '.[demo]'
	touch $(DEMO_STAMP)

# One pip run for everything (the demo's part included) when `make test` comes first.
$(STAMP): pyproject.toml setup.py
	$(VENV_NEW)
	$(PIP_INSTALL) -e '.[demo,test,torch,bench,dataset,ray-serve]'
	# D-RISE's reference for the detection tests and benchmarks. It asks for matplotlib<3.7,
	# which has no build for NumPy 2: installed without its requirements (it imports without
	# them), so pip keeps this environment's matplotlib.
	$(PIP_INSTALL) --no-deps 'vision-explanation-methods>=0.1.1'
	$(COMPILE_ALL)
	touch $(DEMO_STAMP) $(STAMP)

setup: $(STAMP)

demo: $(DEMO_STAMP)
	$(PY) -m limefast.demo

# limefast as users install it: the wheel in a clean venv, used from outside the checkout.
install-check: $(STAMP)
	$(PY) tests/check_wheel.py

# The install check beside the suite (it mostly waits on pip, the disk and one core; its report
# comes in one piece when it is done, the suite's as it goes); then the one-file stages.
test: $(STAMP)
	$(MAKE) --no-print-directory -j2 install-check-beside suite
	ONEDNN_MAX_CPU_ISA=$(ONEDNN_SECOND_ISA) $(TEST) --dist load -q -m "not cudasim" \
		tests/test_device.py
	NUMBA_ENABLE_CUDASIM=1 $(TEST) --dist load -q -m cudasim tests

install-check-beside: $(STAMP)
	$(PY) tests/check_wheel.py > $(VENV)/install-check.log 2>&1; status=$$?; \
		cat $(VENV)/install-check.log; exit $$status

suite: $(STAMP)
	$(TEST) --dist loadfile -q -m "not cudasim" $(TESTS)

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
