# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hilovit-installed
# The CPU wheel; anything newer pulls several GB of CUDA packages.
TORCH  := torch==2.13.0

.PHONY: install data demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Fashion-MNIST from Debian (the embedded default dataset); skipped when it cannot be installed.
data:
	@bash scripts/ensure-fashion-mnist.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) data lint
	$(BIN)/python -m pytest

demo: $(STAMP) data
	$(BIN)/hilovit bench attention --repeats 10

bench: $(STAMP)
	$(BIN)/hilovit bench attention --repeats 15 --output benchmarks/attention

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
