# airlock: `make up` runs everything on the embedded default; `make test` runs the tests.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test test-quick test-integration install bench clean

# Python 3.12+ is required (mitmproxy 12). .python-version makes pyenv's python3 pick it.
$(STAMP): pyproject.toml setup.py app/relay/postgres/_fastlane.c app/relay/postgres/_answers.c
	@set -e; \
	for c in python3.12 python3 python; do \
	  if command -v $$c >/dev/null && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then PYBIN=$$c; break; fi; \
	done; \
	if [ -z "$$PYBIN" ]; then echo "airlock needs Python >= 3.12 (try: pyenv install 3.12)" >&2; exit 1; fi; \
	[ -x $(PY) ] || $$PYBIN -m venv $(VENV); \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

# The portal's browser assets (asciinema-player) come from npm, into node_modules/
# (never committed); reinstalled whenever the lock file changes.
NPM_STAMP := node_modules/.installed
$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "the portal needs npm (Debian: apt-get install npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund --silent
	@touch $(NPM_STAMP)

install: $(STAMP) $(NPM_STAMP)

up: install
	$(VENV)/bin/airlock init
	$(VENV)/bin/airlock up

# The tiers (README, "Running the tests"): tests/conftest.py marks what needs a server
# (postgres, mariadb, sshd, chromium) or is slow (subprocess suites, property tests).
QUICK := not slow and not postgres and not mariadb and not sshd and not chromium

test: install
	$(PY) -m pytest -q

test-quick: $(STAMP)
	$(PY) -m pytest -q -m "$(QUICK)"

test-integration: install
	$(PY) -m pytest -q -m "not ($(QUICK))"

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache
