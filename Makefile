# Everything a fresh clone needs: `make demo`, `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The cudasim stage runs the CUDA kernels on the CPU simulator, in a process of its own.
PYTEST := $(PY) -m pytest

.PHONY: setup demo test bench bench-quick lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,torch,bench,dataset]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m limefast.demo

test: $(STAMP)
	$(PYTEST) -q -m "not cudasim" tests
	NUMBA_ENABLE_CUDASIM=1 $(PYTEST) -q -m cudasim tests

bench: $(STAMP)
	mkdir -p bench-results
	$(PYTEST) benchmarks -q -s --benchmark-columns=median,iqr,rounds \
		--benchmark-json=bench-results/pytest-benchmark.json
	$(PY) -m limefast.benchsuite --out bench-results

bench-quick: $(STAMP)
	$(PY) -m limefast.benchsuite --quick --out bench-results

lint: $(STAMP)
	$(PY) -m ruff check limefast kernels tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks bench-results
