# Two commands do all the setup on a fresh machine with Python >= 3.11 and pip:
#   make demo   - create .venv, install invphys, run the main job (reproduce --quick)
#   make test   - create .venv, install invphys with test extras, run the test suite
#   make lint   - ruff and the import contracts (what may import what)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: demo test test-all lint bench reproduce clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/invphys reproduce --quick --out $(OUT)/reproduce

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "" tests

# ruff; the layers, private-module and no-cycle contracts ([tool.importlinter] in
# pyproject.toml); private names, root imports and JAX config (scripts/check_imports.py)
lint: $(STAMP)
	$(BIN)/ruff check invphys tests benchmarks scripts
	$(BIN)/lint-imports --no-logo
	$(BIN)/python scripts/check_imports.py invphys

clean:
	rm -rf $(VENV) $(OUT)
