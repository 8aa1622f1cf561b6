# Two commands: `make run` and `make test`. Both bootstrap a fresh Debian machine by themselves.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint bench bootstrap mosquitto-present clean deploy-check install-service

bootstrap: $(STAMP) mosquitto-present

$(STAMP): pyproject.toml
	@python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null \
		|| { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv; }
	@[ -x $(BIN)/python ] || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Mosquitto is a system package: install it when it is absent (tests start their own instance).
mosquitto-present:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] \
		|| { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto; }

run: bootstrap
	$(BIN)/rcs-stack

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: bootstrap
	$(BIN)/python bench/acquisition.py
	$(BIN)/python bench/actuation.py
	$(BIN)/python bench/logger.py
	$(BIN)/python bench/gateway.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The compose deployment on a real Docker engine (deploy/check.sh; installs the engine when absent).
deploy-check: bootstrap
	deploy/check.sh

# Native deployment without Docker: systemd unit, udev rules, service user (deploy/install-service.sh).
install-service:
	deploy/install-service.sh
