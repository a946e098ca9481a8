# The two commands of the README:
#   make demo   set everything up, then run the whole pipeline with simulated parks
#   make test   set everything up, then run the linters and the test suite (what CI runs)
# Both install what they need on a fresh Debian machine: the servers from Debian's packages
# (only if missing) and the Python dependencies into .venv.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := mosquitto mosquitto-clients influxdb influxdb-client victoria-metrics openssl \
	prometheus-alertmanager docker-compose
SERVER_BINARIES := /usr/sbin/mosquitto /usr/bin/influxd /usr/bin/victoria-metrics /usr/bin/openssl \
	/usr/bin/prometheus-alertmanager /usr/bin/docker-compose

.PHONY: setup system-packages test lint demo run bench clean

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=0; for b in $(SERVER_BINARIES); do [ -x $$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		echo "installing Debian packages: $(DEBIAN_PACKAGES)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded-broker]'
	@# Byte-compiled once, as installing a wheel does: an editable install under
	@# PYTHONDONTWRITEBYTECODE=1 would otherwise compile all of parkwatch at every start (~0.2 s).
	$(BIN)/python -m compileall -q parkwatch collector kpi rules notify dashboards simulators
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

demo: setup
	$(BIN)/parkwatch demo

run: setup
	$(BIN)/parkwatch run

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
