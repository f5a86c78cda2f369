# Eventfold: `make run` (the platform) and `make test` (the suite) are the two set-up commands.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# `make up KAFKA_BROKERS=3`: a three-broker Kafka cluster (replication factor 3)
ifdef KAFKA_BROKERS
export EVENTFOLD_KAFKA_BROKERS := $(KAFKA_BROKERS)
endif

.PHONY: run test up down status bench lint venv provision clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

provision: venv
	stack/stack.sh provision

run: venv
	stack/stack.sh run

up: venv
	stack/stack.sh up-all

down:
	stack/stack.sh down

status:
	stack/stack.sh status

test: provision
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
