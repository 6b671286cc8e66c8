# Every target builds the environment it needs first; a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo-run

.PHONY: env demo test lint bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/python -m uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/cleanpairs demo-corpus $(DEMO)/corpus --images 200 --captions 2 --noise 0.3
	$(BIN)/cleanpairs score $(DEMO)/corpus/pairs.parquet -o $(DEMO)/scores.parquet --cache-dir $(DEMO)/cache
	$(BIN)/cleanpairs info $(DEMO)/scores.parquet --truth is_clean
	$(BIN)/cleanpairs filter $(DEMO)/scores.parquet --thresh 0.5 -o $(DEMO)/kept.parquet --rejected $(DEMO)/rejected.parquet
	$(BIN)/cleanpairs export $(DEMO)/scores.parquet --format webdataset --thresh 0.5 -o $(DEMO)/export

test: $(STAMP)
	$(BIN)/ruff check cleanpairs cli tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check cleanpairs cli tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/foundation.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/rematch.py
	$(BIN)/python benchmarks/trainers.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache
