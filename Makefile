# jaxprune: `make demo` runs the README experiment, `make test` the test suite.
# Each target creates .venv and installs the pinned requirements by itself (once; the stamp
# files make later runs skip pip until a requirements file changes).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint format install install-test clean-runs

demo: $(RUN_STAMP)
	$(PY) -m jaxprune.main --config configs/lenet300_mnist_gmp.py --workdir runs/lenet300_mnist_gmp

test: $(TEST_STAMP)
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(TEST_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt constraints.txt | $(PY)
	$(PY) -m pip install -r requirements.txt -c constraints.txt
	touch $@

$(TEST_STAMP): requirements-test.txt $(RUN_STAMP)
	$(PY) -m pip install -r requirements-test.txt -c constraints.txt
	touch $@

clean-runs:
	rm -rf runs
