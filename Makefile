# The two commands of the course (see README.md):
#   make course   set everything up, run every notebook headless, write HTML under build/
#   make test     set everything up, run the unit tests and every notebook in fast mode
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup test test-slow course gallery browser lab bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v python3 >/dev/null || { echo "error: python3 (3.9 or newer) is needed"; exit 1; }
	@if ! command -v dot >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "graphviz 'dot' is missing: installing it from Debian (notebook 01 draws graphs with it)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  else \
	    echo "error: graphviz 'dot' is missing; notebook 01 needs it. Run: sudo apt-get install -y graphviz"; exit 1; \
	  fi; \
	fi
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $@

setup: $(STAMP)

test: setup
	NNVIS_FAST=1 $(PYTHON) -m pytest -m "not slow"

test-slow: setup
	$(PYTHON) -m pytest -m slow tests

course: setup
	@mkdir -p build/gallery
	NNVIS_GALLERY_DIR=$(CURDIR)/build/gallery $(VENV)/bin/jupyter nbconvert --to html --execute \
	  --ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.kernel_name=python3 \
	  --output-dir build $(NOTEBOOKS)
	@echo; echo "The course ran. Open the executed notebooks in a browser:"; \
	  for f in build/*.html; do echo "  file://$$PWD/$$f"; done

gallery: course
	cp build/gallery/*.png images/
	@echo "images/ regenerated from the course run; commit what changed."

# Notebook 07's network browser for the offline model: a static site under build/browser/ (open its
# index.html from disk) and its screenshot in images/browser.png, taken in headless chromium.
browser: setup
	$(PYTHON) scripts/screenshot_browser.py --site build/browser --out images/browser.png \
	  --layers blocks.1 blocks.3 blocks.5 --channels 24 --length 512 --k 6 --ignore-border 1
	@echo "The browser: file://$(CURDIR)/build/browser/index.html"

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

bench: setup
	for script in bench/bench_*.py; do $(PYTHON) $$script || exit 1; done

clean:
	rm -rf build .pytest_cache runs
