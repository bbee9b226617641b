# The README's two commands: `make demo` (main job) and `make test`. Both set up .venv first;
# a second run reuses it (the stamp file is rebuilt only when the install inputs change).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spectra-rec-installed
ARGS ?=

.PHONY: setup demo test bench clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# RecBole pins ray<=2.6.3 (no wheel for Python 3.12+); we never use its ray tuning, so it is
	# installed without its requirements, which pyproject.toml lists (minus ray).
	$(PY) -m pip install -q -c constraints.txt --no-deps recbole==1.2.1
	touch $(STAMP)

demo: setup
	$(PY) run_fusion.py --model SASRec $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

clean-runs:
	rm -rf runs
