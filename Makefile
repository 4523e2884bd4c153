# The two commands of the course (see README.md):
#   make course   set everything up, run every notebook headless, write HTML under build/
#   make test     set everything up, run the unit tests and every notebook in fast mode
# and, to prove a bound holds on a learner's CPU too:
#   make test-matrix      the fast notebooks and the numerical unit tests under several CPU arithmetics,
#                         one and two torch threads and three seeds: a table notebook x setting, and margins
#   make test-arithmetic  the fast notebooks once more in plain SSE arithmetic on one thread (what CI adds)
# and, to walk the learner's Colab path without a download:
#   make test-colab       every notebook in fast mode with load_model("auto") on VGG-16 (random weights) and
#                         dataset("auto") finding an Imagenette stand-in on disk (build/imagenette-standin)
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The unit tests whose results are measured numbers (optimizations, random draws, tolerances): the matrix runs them
# in every setting. The other tests check shapes, errors, widgets and files, which do not move with the arithmetic.
NUMERICAL_TESTS := tests/test_attribution.py tests/test_saliency.py tests/test_adversarial.py tests/test_featurevis.py \
  tests/test_faithfulness.py tests/test_atlas.py tests/test_blocks.py tests/test_channels.py tests/test_inversion_style.py \
  tests/test_exercises.py tests/test_heldout_models.py tests/test_atlas_attribution.py tests/test_atlas_patch.py

.PHONY: setup test test-slow test-matrix test-arithmetic test-colab course gallery browser lab bench clean

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
	NNVIS_FAST=1 $(PYTHON) -m pytest -m "not slow and not colab"

test-slow: setup
	$(PYTHON) -m pytest -m slow tests

test-matrix: setup
	$(PYTHON) scripts/run_notebooks.py --matrix --unit-tests $(NUMERICAL_TESTS)

test-arithmetic: setup
	$(PYTHON) scripts/run_notebooks.py --matrix --arithmetic default --threads 1 --seeds 0

# The stand-in is written once under build/ (about 30 s) and kept: torchvision's Imagenette layout, the real class and
# split sizes, pictures cut from the offline photos (tests/conftest.py, scripts/imagenette_standin.py).
test-colab: setup
	NNVIS_FAST=1 $(PYTHON) -m pytest -m colab tests/test_colab_path.py

# Every notebook runs, even after one failed; each is written as HTML (a failing cell shows its error there),
# a summary names the failed ones, and the exit status is non-zero if any failed.
course: setup
	@mkdir -p build/gallery
	NNVIS_GALLERY_DIR=$(CURDIR)/build/gallery $(PYTHON) scripts/run_notebooks.py --html build

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
