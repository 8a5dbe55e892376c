# Two commands for a new user (see README):  make serve   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: setup serve test lint bench
setup: $(STAMP)

# Set up (first time) and start the hub on SQLite with the Dutch demo region.
serve: $(STAMP)
	$(BIN)/hub serve --demo $(ARGS)

# The test suite (SQLite; HUB_TEST_DB=sqlite,postgresql://... adds databases).
test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
