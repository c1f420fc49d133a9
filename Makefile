# fedmisp: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# A node in ./demo/node with the sample events of configs/samples imported, then what it holds.
demo: install
	rm -rf $(DEMO)/node
	$(VENV)/bin/fedmisp init --home $(DEMO)/node --org "National CSIRT"
	$(VENV)/bin/fedmisp import --home $(DEMO)/node configs/samples
	$(VENV)/bin/fedmisp status --home $(DEMO)/node
	$(VENV)/bin/fedmisp events --home $(DEMO)/node
	$(VENV)/bin/fedmisp export --home $(DEMO)/node --format feed --out $(DEMO)/feed

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis
