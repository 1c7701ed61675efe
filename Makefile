# The two commands of the README. Each sets up .venv itself (once; again only when pyproject.toml
# changes), so a fresh clone with nothing but Python 3.11+ needs nothing else.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: $(STAMP)
	$(VENV)/bin/hybrid-serve serve

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis

bench: $(STAMP)
	$(VENV)/bin/python -m pytest benchmarks -n 0 -p no:randomly --benchmark-json=benchmarks/results/pytest-benchmark.json -s -q
