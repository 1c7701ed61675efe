# The two commands of the README. Each sets up .venv itself (once; again only when pyproject.toml
# changes), so a fresh clone with nothing but Python 3.11+ needs nothing else.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test bench docs docs-serve clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing hybrid-serve and its dependencies into $(VENV) (once; about 2 minutes on 2 cores)..."
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: $(STAMP)
	@$(VENV)/bin/hybrid-serve serve

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest

# Debian's Chromium, for the dashboard's browser test: installed when absent and this is a Debian
# machine run as root (CI); elsewhere the test says how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& echo "installing Debian's chromium for the dashboard's browser test" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "note: no chromium: the dashboard's browser test will fail (apt-get install chromium)"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis site

# The documentation site (docs/ and the README as its home page) into site/; --strict: a broken
# link or a page missing from the navigation is an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

bench: $(STAMP)
	$(VENV)/bin/python -m pytest benchmarks -n 0 -p no:randomly --benchmark-json=benchmarks/results/pytest-benchmark.json -s -q
