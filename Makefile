# Documented entry points. `make run` is the main job, `make test` the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup browser run test test-slow chaos bench lint kafka-up kafka-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml deploy/kafka/pom.xml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python deploy/kafka/local_kafka.py fetch
	touch $(STAMP)

run: setup                     ## local Kafka + a worker + a demo stream, then a report
	$(BIN)/tusk demo

test: setup browser            ## unit + integration tests (real Kafka: see tests/conftest.py)
	$(BIN)/python -m pytest -q

browser:                       ## Debian's Chromium for the console's browser test (skipped without it)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the console's browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the console's browser test will be skipped"; \
	  else \
	    echo "no chromium (as root: apt-get install chromium): the console's browser test will be skipped"; \
	  fi; }

test-slow: setup               ## the variants kept out of `make test` for its time (other SASL mechanism, no standbys, ...)
	$(BIN)/python -m pytest -q -m slow

chaos: setup                   ## fault injection on real workers and broker (kill -9, broker restart, rebalance)
	$(BIN)/python -m pytest -q -s -m chaos tests/chaos

BENCH_ARGS ?=
bench: setup                   ## throughput, ceilings, latency, memory, recovery: one JSON (stdout, .tusk/bench/latest.json)
	$(BIN)/python -m stream.bench.suite $(BENCH_ARGS)

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
