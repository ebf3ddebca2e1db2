# One entry point for people and CI. `make test` works from a fresh clone on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GALLERY ?= gallery
INDEX ?= index
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv test lint bench serve

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,milvus,distributed]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-logo

# The main command: index the photos in GALLERY (incrementally) into INDEX, then serve API + page on PORT.
serve: $(STAMP)
	@test -d "$(GALLERY)" || { echo "GALLERY=$(GALLERY) is not a folder: make serve GALLERY=/path/to/photos" >&2; exit 2; }
	$(PY) -m index_builder build --gallery "$(GALLERY)" --out "$(INDEX)"
	HOST="$(HOST)" PORT="$(PORT)" $(PY) -m app --index-dir "$(INDEX)"
