# Two entry points for a fresh machine (see README): `make repl` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: install dev repl test check bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The CPU build of torch goes in first, so the project's `torch` requirement is already met.
install: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .

dev: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'

repl: install
	$(BIN)/genbot repl

test: dev
	$(BIN)/python -m pytest -q

check: dev
	$(BIN)/ruff check genbot tests bench
	$(BIN)/ruff format --check genbot tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
