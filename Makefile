# Documented entry points. `make run` is the main job, `make test` the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test lint kafka-up kafka-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml deploy/kafka/pom.xml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python deploy/kafka/local_kafka.py fetch
	touch $(STAMP)

run: setup                     ## local Kafka + a worker + a demo stream, then a report
	$(BIN)/tusk demo

test: setup                    ## unit + integration tests (real Kafka: see tests/conftest.py)
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

kafka-up: setup                ## a local Kafka on 127.0.0.1:19092 (KRaft, no Docker)
	$(BIN)/python deploy/kafka/local_kafka.py up

kafka-down:
	$(BIN)/python deploy/kafka/local_kafka.py down

clean:
	-$(BIN)/python deploy/kafka/local_kafka.py down
	rm -rf $(VENV) .tusk deploy/kafka/.run deploy/kafka/.cache
