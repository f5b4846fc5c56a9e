# Two entry points for a fresh machine (see README): `make repl` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
# A tested set of versions of every dependency (see README, "Installing"); `make constraints` rewrites it.
PIP_INSTALL := $(BIN)/pip install -q -c constraints.txt

.PHONY: install dev repl test check bench clean constraints

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The CPU build of torch goes in first, so the project's `torch` requirement is already met.
install: $(BIN)/python
	$(PIP_INSTALL) $(TORCH)
	$(PIP_INSTALL) -e .

dev: $(BIN)/python
	$(PIP_INSTALL) $(TORCH)
	$(PIP_INSTALL) -e '.[dev]'

repl: install
	$(BIN)/genbot repl

# Two test processes (files kept whole on one), then the tests that need the machine to themselves.
PYTEST_SPLIT := -n 2 --dist loadfile -m "not serial"
test: dev
	$(BIN)/python -m pytest -q $(PYTEST_SPLIT)
	$(BIN)/python -m pytest -q -m serial

check: dev
	$(BIN)/ruff check genbot tests bench
	$(BIN)/ruff format --check genbot tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_SPLIT)
	$(BIN)/python -m pytest -q -m serial

bench: install
	$(BIN)/python bench/run_all.py

# Pin what the dev environment holds now (after the tests pass with it).
constraints: dev
	{ echo "# A tested set of versions: make installs with -c constraints.txt (regenerate with make constraints)."; \
	  echo "# torch is the CPU build on the test machines; the same version's CUDA build works unchanged."; \
	  $(BIN)/pip freeze --exclude genbot | grep -v '^-e\|^#' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
