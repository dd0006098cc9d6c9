# The two commands of the README. Each creates .venv if missing and installs the project into it first.
#   make demo   run the demo end to end on CPU (outputs under outputs/demo/)
#   make test   ruff + pytest (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall whenever the dependency declarations change.
STAMP := $(VENV)/.monai-xai-installed

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,label,dicom,export]'
	touch $@

demo: $(STAMP)
	$(BIN)/monai-xai demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
