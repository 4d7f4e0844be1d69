# Two commands for a fresh machine: `make demo` and `make test` (see README).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,export]"

demo: setup
	$(BIN)/bitsmith demo --out runs/demo

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2

clean:
	rm -rf runs .pytest_cache
