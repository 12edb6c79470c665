# One command each: `make demo` (set up + run on the built-in example data), `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints-ci.txt
	$(BIN)/python -m pip install --quiet -c constraints-ci.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/scip example-data examples/data --events 500 --fields 4
	$(BIN)/scip run examples/config.yml --overwrite
	$(BIN)/scip run examples/fields.yml --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf examples/data examples/results
