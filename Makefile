# Two commands: `make run` and `make test`. Both bootstrap a fresh Debian machine by themselves.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint bench bootstrap mosquitto-present chromium-present gcc-present arm-tools-present firmware-check clean deploy-check install-service

bootstrap: $(STAMP) mosquitto-present chromium-present

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

# The console's browser tests drive Debian's Chromium through Playwright's Python package.
chromium-present:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] \
		|| { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# The firmware core's host build (firmware/: unit tests, firmware in the loop) needs a C compiler.
gcc-present:
	@command -v gcc >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q gcc libc6-dev; }

# The Cortex-M7 build of the firmware core and the emulated board it runs on.
arm-tools-present:
	@{ command -v arm-none-eabi-gcc && command -v qemu-system-arm \
		&& [ -f /usr/lib/arm-none-eabi/newlib/libc.a ]; } >/dev/null 2>&1 \
		|| { $(SUDO) apt-get update -q \
			&& $(SUDO) apt-get install -y -q gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm; }

# firmware/ on a Cortex-M7: cross-compiled (code and RAM sizes printed), then run under QEMU
# mps2-an500 against the real acquisition service (handshake, valve write, go-safe, watchdog).
firmware-check: bootstrap gcc-present arm-tools-present
	$(MAKE) -C firmware size
	$(BIN)/pytest -m qemu tests/

# RCS_STM32_EMULATOR=firmware: the STM32 is the C core of firmware/, built for the host on demand.
run: bootstrap $(if $(filter firmware,$(RCS_STM32_EMULATOR)),gcc-present)
	$(BIN)/rcs-stack

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers (this is a 2-core machine's suite), each taking whole files: a module's stand and
# browser are started once, and every test still starts its own servers on free loopback ports.
test: lint gcc-present
	$(BIN)/pytest -n 2 --dist loadfile

bench: bootstrap gcc-present
	$(BIN)/python bench/firmware.py
	$(BIN)/python bench/acquisition.py
	$(BIN)/python bench/actuation.py
	$(BIN)/python bench/logger.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/abort_flood.py
	$(BIN)/python bench/dashboard.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The compose deployment on a real Docker engine (deploy/check.sh; installs the engine when absent).
deploy-check: bootstrap
	deploy/check.sh

# Native deployment without Docker: systemd unit, udev rules, service user (deploy/install-service.sh).
install-service:
	deploy/install-service.sh
