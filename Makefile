# fedmisp: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo

.PHONY: install demo test bench bench-api pymisp-live mutants clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Three organisations' nodes on 127.0.0.1 (configs/demo/federation.toml): replicate, then show
# what each holds, what it was not sent and why, and the correlations; runs until Ctrl-C.
demo: install
	$(VENV)/bin/fedmisp demo --dir $(DEMO)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/ingest.py

# restSearch and events/view on a node holding 1M attributes, as ratios to a trivial aiohttp handler.
bench-api: install
	$(PY) bench/api.py

# PyMISP's own live suite (testlive_comprehensive.py of the installed pymisp's sdist, fetched into
# tests/.cache), each test on a fresh node, only setup adapted (tests/pymisp_live/README.md). Minutes,
# so not part of `make test`; prints passed/failed/errored and writes bench/pymisp-live/<date>.txt.
pymisp-live: install
	$(PY) -m pip install --quiet -e '.[test,live]'
	nice -n 10 $(PY) tests/pymisp_live/run.py $(PYMISP_LIVE)

# Mutation testing of the security rules (tools/mutants.py): breaks one rule at a time and runs the
# tests mapped to its module. Hours for every target, so not part of `make test`; niced, one core.
# MUTANTS="--module policy/filters --sample 40" narrows it.
mutants: install
	nice -n 19 $(PY) tools/mutants.py $(MUTANTS)

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis
