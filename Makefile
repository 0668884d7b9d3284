# Two targets a fresh machine needs: `make run` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

.PHONY: setup run test test-fast test-slow test-soak lint bench screenshots golden
setup: $(BIN)/.installed

run: setup
	$(BIN)/slotlab $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# No test's outcome depends on wall time or load. `slow` ones (long fuzzing and Hypothesis
# explorations, the tmux demo story, the key and resize storms, the largest screens) are left to
# test-slow, which CI runs too; `soak` ones to test-soak.
test: lint
	$(BIN)/pytest -n 2 -q

# The model and the engine without the tests marked slow or heavy (whole seed matrices, a Dask
# cluster, 40,000-line inputs, a run per hash seed): the loop to run while editing them.
# `make test` runs them all.
test-fast: setup
	$(BIN)/pytest -n 2 -q -m "not slow and not soak and not heavy" tests/model tests/engine

test-slow: setup
	$(BIN)/pytest -n 2 -q -m slow

# The TUI's long key storms (2,000 keys x 10 seeds x 2 sizes, 10,000 keys): about a quarter of
# an hour, so CI leaves them out.
test-soak: setup
	$(BIN)/pytest -n 2 -q -m soak

bench: setup
	$(BIN)/slotlab bench $(ARGS)

screenshots: setup
	$(BIN)/python -m tui.screenshots

# The report golden files (tests/report/golden) from their fixed seeds; review the diff after.
golden: setup
	SLOTLAB_REGEN_GOLDEN=1 $(BIN)/pytest -q -p no:xdist tests/report/test_golden.py
