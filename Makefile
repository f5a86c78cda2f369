# Eventfold: `make run` (the platform) and `make test` (the suite) are the two set-up commands.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# `make up KAFKA_BROKERS=3`: a three-broker Kafka cluster (replication factor 3)
ifdef KAFKA_BROKERS
export EVENTFOLD_KAFKA_BROKERS := $(KAFKA_BROKERS)
endif

.PHONY: run test up down status bench lint venv provision clean console

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

provision: venv
	stack/stack.sh provision
	@# headless Chromium + chromedriver (Debian) for the console's browser test, which
	@# skips (saying why) only where they cannot be installed
	stack/browser.sh || echo "[browser] not installed: the console's browser test will be skipped" >&2

# The operations console's assets: console/src plus uPlot (pinned, locked) from npm,
# built into the Python package (query_api/console_assets, not in git) when missing or
# older than their sources.
CONSOLE_ASSETS := query_api/console_assets/console.js
$(CONSOLE_ASSETS): console/package.json console/package-lock.json console/build.mjs $(wildcard console/src/*)
	@command -v npm >/dev/null || { echo "npm is needed to build the console (Debian: apt-get install npm)" >&2; exit 1; }
	cd console && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

console: $(CONSOLE_ASSETS)

run: venv console
	stack/stack.sh run

up: venv console
	stack/stack.sh up-all

down:
	stack/stack.sh down

status:
	stack/stack.sh status

test: provision console
	$(BIN)/pytest

bench: provision
	benchmarks/ensure_wrk.sh
	$(BIN)/pytest benchmarks -p no:cacheprovider -s; status=$$?; \
	  $(BIN)/python -m benchmarks.table; exit $$status

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy schemas producers stream_processors projections query_api eventfold

clean: down
	rm -rf .stack
