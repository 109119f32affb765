PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install soak test bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

soak: install
	$(BIN)/soak run $(PROFILE) $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

bench: install
	$(BIN)/python -m soak.bench $(ARGS)

lint: install
	$(BIN)/ruff check soak tests
	$(BIN)/ruff format --check soak tests

clean:
	rm -rf $(VENV) build *.egg-info

format: install
	$(BIN)/ruff format soak tests
