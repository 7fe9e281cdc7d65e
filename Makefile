# Herald: `make run` starts everything on this machine; `make test` runs the whole suite.
# All downloads are cached in ignored folders (.venv, .cache) so later runs are fast.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HERALD := $(VENV)/bin/herald
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export HERALD_KAFKA_DIR ?= $(CURDIR)/.herald/kafka
CONFIG ?= examples/cfg.yaml

.PHONY: run test test-fast bench venv kafka kafka-stop opa prometheus podman image helm lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
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

test: venv opa prometheus
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -p no:cacheprovider -m "not e2e" $(PYTEST_ARGS)

bench: venv opa
	$(PY) bench/run.py

lint: venv
	$(VENV)/bin/ruff check app agents actions tests

clean:
	rm -rf .herald
