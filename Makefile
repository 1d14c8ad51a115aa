# Two commands matter:  `make book` (build and execute the book)  and  `make test`.
# Both use the active virtual environment when there is one, and create .venv otherwise.

PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
BIN := $(VENV)/bin

.PHONY: test book checks bench pages sample install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	touch $@

install: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

checks: $(VENV)/.installed-test
	$(BIN)/python -m checks

book: $(VENV)/.installed-book
	$(BIN)/jupyter-book clean .
	$(BIN)/jupyter-book build . -W -n --keep-going

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/speed.py

# Open every built page in headless Chromium: equations typeset, figures present, no network;
# then measure it as a reader meets it (solutions folded, no build paths, quiet outputs,
# reading time, phone layout) and fail when a bound is broken.
pages: $(VENV)/.installed-pages
	$(BIN)/python scripts/check_pages.py _build/html
	$(BIN)/python scripts/check_book.py _build/html

# Rebuild the MNIST sample shipped in cnn_lessons/sample from the full files.
sample: $(VENV)/.installed-test
	$(BIN)/python scripts/make_sample.py

clean:
	rm -rf _build .pytest_cache .hypothesis
