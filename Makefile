# Two commands run everything: `make demo` (the main job, embedded defaults, no cloud keys)
# and `make test` (the whole suite). Both create .venv and install on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEPS := pyproject.toml

.PHONY: demo test bench lint typecheck clean install speech-data test-services

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python $(DEPS)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/voicegraph call --scenario insurance

# Real human recordings for the STT accuracy tests (Debian packages; see the script).
speech-data:
	bash scripts/speech-data.sh

# The local services the tests start (redis-server, ...; see the script).
test-services:
	bash scripts/test-services.sh

test: $(STAMP) speech-data test-services
	$(BIN)/python -m pytest -q

$(VENV)/.perf: $(STAMP)
	$(BIN)/pip install -q -e '.[test,perf]'
	touch $(VENV)/.perf

bench: $(VENV)/.perf speech-data
	$(BIN)/python perf/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
