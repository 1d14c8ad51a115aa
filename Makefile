# Two commands matter:  `make book` (build and execute the book)  and  `make test`.
# All targets use the active virtual environment when there is one, and create .venv otherwise.
# To run the chapters:  `make lab` (JupyterLab; ARGS="--no-browser --port 8890" passes options)
# or  `make notebooks` (every chapter as an .ipynb in notebooks/, for other notebook programs).

PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
BIN := $(VENV)/bin

.PHONY: test book checks bench pages sample install clean lab notebooks test-lab

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

# Open every built page in headless Chromium: equations typeset, figures present, no network.
pages:
	$(BIN)/python scripts/check_pages.py _build/html

# Rebuild the samples shipped in cnn_lessons/sample from the full files.
sample: $(VENV)/.installed-test
	$(BIN)/python scripts/make_sample.py --dataset mnist
	$(BIN)/python scripts/make_sample.py --dataset fashion-mnist

# JupyterLab on the repository, opening on book/; a chapter (.md) opens as a notebook.
# JupyterLab refuses to run as root unless told to, as in a container.
lab: $(VENV)/.installed-lab
	$(BIN)/jupyter-lab --config=jupyter/jupyter_lab_config.py \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

# The JupyterLab test, which fails (rather than skips) without JupyterLab or Chromium.
test-lab: $(VENV)/.installed-lab $(VENV)/.installed-browser
	CNN_LESSONS_LAB_TEST=require $(BIN)/python -m pytest tests/test_lab.py

# Each chapter as a plain notebook, notebooks/NN-name.ipynb, rewritten when its .md changed.
CHAPTERS := $(wildcard book/*.md)
notebooks: $(CHAPTERS:book/%.md=notebooks/%.ipynb)

notebooks/%.ipynb: book/%.md | $(VENV)/.installed-test
	@mkdir -p notebooks
	$(BIN)/jupytext --quiet --to ipynb --output notebooks/.$*.tmp.ipynb $<
	mv notebooks/.$*.tmp.ipynb $@

clean:
	rm -rf _build .pytest_cache .hypothesis notebooks
