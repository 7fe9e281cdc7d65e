# Herald: `make run` starts everything on this machine; `make test` runs ruff, mypy and the whole suite.
# All downloads are cached in ignored folders (.venv, .cache) so later runs are fast.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HERALD := $(VENV)/bin/herald
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export HERALD_KAFKA_DIR ?= $(CURDIR)/.herald/kafka
CONFIG ?= examples/cfg.yaml

.PHONY: run check test test-fast bench venv kafka kafka-stop opa prometheus podman image helm lint clean

# The venv holds exactly requirements.lock (scripts/lock.sh; every file checked against its sha256),
# then Herald itself. A lock that no longer matches pyproject.toml's pins is reported and the venv
# comes from pyproject instead; tests/test_supply_chain.py and make lint fail until the lock is redone.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if $(PY) scripts/supply_chain.py pins; then \
		$(PY) -m pip install -q --require-hashes -r requirements.lock && $(PY) -m pip install -q --no-deps -e .; \
	else \
		echo "WARNING: requirements.lock is out of date (run scripts/lock.sh); installing from pyproject.toml" >&2; \
		$(PY) -m pip install -q -e '.[test,dev]'; \
	fi
	touch $@

venv: $(VENV)/.installed

kafka: venv
	$(HERALD) kafka-local start

kafka-stop: venv
	$(HERALD) kafka-local stop

opa:
	scripts/build-opa.sh

prometheus:  # a real Prometheus for tests/test_prometheus_e2e.py (built from the Go module proxy)
	scripts/build-prometheus.sh

podman:
	scripts/podman-service.sh start

image:  # the container image localhost/herald:dev, built with Podman (storage and caches in .cache/image)
	scripts/build-image.sh build localhost/herald:dev

helm:  # helm v3 for the chart in deploy/helm/herald (built from the Go module proxy)
	scripts/build-helm.sh

run: venv kafka
	@echo "POST events to http://127.0.0.1:8082/  (e.g. curl -d @event.json localhost:8082/)."
	@echo "Stop: Ctrl-C, then 'make kafka-stop' to stop the local broker."
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 $(HERALD) run --config $(CONFIG)

# ruff, then mypy (strict on app, agents and actions); both configured in pyproject.toml and
# installed by make venv (the dev extra). make test and make test-fast stop here if either fails.
check: venv
	$(VENV)/bin/ruff check app agents actions tests scripts
	$(VENV)/bin/mypy

test: check opa prometheus
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# the unit layer: everything but the tests marked e2e (real broker, OPA server, Podman, browser)
test-fast: check
	$(PY) -m pytest -q -p no:cacheprovider -m "not e2e" $(PYTEST_ARGS)

bench: venv opa
	$(PY) bench/run.py

# ruff and mypy, then the lock: pyproject's pins and hashes, and no locked version named by an
# advisory in security/advisories (a vendored OSV copy; see security/README.md)
lint: check
	$(PY) scripts/supply_chain.py pins
	$(PY) scripts/supply_chain.py audit

clean:
	rm -rf .herald
