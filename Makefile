# The portal's two commands: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export PORTAL_DATA_DIR ?= $(CURDIR)/data

.PHONY: install run test test-fast lint bench

install: $(STAMP)

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: install
	PORTAL_DEBUG=$${PORTAL_DEBUG:-1} $(PY) manage.py migrate --noinput
	PORTAL_DEBUG=$${PORTAL_DEBUG:-1} $(PY) manage.py collectstatic --noinput -v0
	PORTAL_DEBUG=$${PORTAL_DEBUG:-1} PORTAL_MQTT_TLS_PORT=$${PORTAL_MQTT_TLS_PORT-8883} $(PY) manage.py setupportal
	PORTAL_DEBUG=$${PORTAL_DEBUG:-1} PORTAL_MQTT_TLS_PORT=$${PORTAL_MQTT_TLS_PORT-8883} $(PY) manage.py runportal

# Style, then the import layers (pyproject.toml's import-linter contracts), then the whole suite.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick lane: everything but the tests that start a broker, a worker, a server, a fresh
# interpreter or a browser, and the whole-project sweeps (access matrix, fuzzing).
test-fast: lint
	$(PY) -m pytest -m "not broker and not browser and not sweep" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

# Benchmarks (bench/bench_*.py): prints a table and writes bench/results.json.
# bench_http loads gunicorn with wrk (Debian's package), installed here when missing.
bench: install
	@command -v wrk >/dev/null || apt-get install -y wrk || sudo apt-get install -y wrk
	$(PY) bench/run.py $(BENCH_ARGS)
