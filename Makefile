# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint type unit integration format demo bench bench-s3 soak soak-hostile clean

# constraints.txt pins every tool and test dependency: a fresh machine gets the versions
# the suite last passed with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## test: lint, type-check and run every test (unit and integration)
test: $(STAMP) lint type
	$(PY) -m pytest tests

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks deploy
	$(PY) -m ruff format --check src tests benchmarks deploy

type: $(STAMP)
	$(PY) -m mypy --strict

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks deploy
	$(PY) -m ruff check --fix src tests benchmarks deploy

## demo: the whole pipeline on 127.0.0.1 with synthetic granules (DEMO_STORE=s3: into a local bucket)
demo: $(STAMP)
	$(VENV)/bin/s2-downloader demo $(if $(DEMO_STORE),--store $(DEMO_STORE))

BENCH_STAMP := $(VENV)/.bench-installed
SOAK_SEED ?= 20251128

# sentinelsat (the peer) and curl (the baseline) are only needed by the benchmarks.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl; } \
		|| { echo "make bench needs curl on PATH" >&2; exit 2; }
	touch $(BENCH_STAMP)

## bench: s2-downloader against curl, MD5 and sentinelsat, memory, concurrency, overhead, Lambda,
## the S3 store on SeaweedFS; writes docs/benchmarks.md (about 16 minutes; run it on a quiet machine)
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks

## bench-s3: the S3 section alone (on SeaweedFS), replaced in docs/benchmarks.md (about 10 minutes)
bench-s3: $(BENCH_STAMP)
	$(PY) -m benchmarks.s3_path --into docs/benchmarks.md

## soak: 200 granules through hub faults, a PostgreSQL restart and a kill -9 of a runner;
## writes docs/soak.md and fails if any end state is wrong (about a minute; SOAK_SEED=N to vary)
soak: $(STAMP)
	$(PY) -m benchmarks.soak --seed $(SOAK_SEED)

## soak-hostile: 500 granules and 50 hostile messages through two runners (one clock-skewed) and a
## Lambda, with a trickling, throttling, failing hub, two PostgreSQL restarts, broken store places,
## a store outage and a database outage under the Lambda; writes
## docs/soak-hostile.md and fails if any check fails (several minutes; SOAK_SEED=N to vary)
soak-hostile: $(STAMP)
	@test -e /usr/lib/$$(uname -m)-linux-gnu/faketime/libfaketimeMT.so.1 \
		|| { apt-get update -qq && apt-get install -y -qq faketime; } \
		|| { echo "make soak-hostile needs libfaketime (apt-get install faketime)" >&2; exit 2; }
	$(PY) -m benchmarks.soak_hostile $(if $(SOAK_SEED_HOSTILE),--seed $(SOAK_SEED_HOSTILE))

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
