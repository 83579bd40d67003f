PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test test-asgi fuzz bench membench cluster cluster-down cluster-status clean

install: $(STAMP)

# Both distributions, editable: the server (streamgate) and the Python
# client (streamgate-client, client/python), which the tests drive.
$(STAMP): pyproject.toml setup.py client/python/pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e 'client/python[test]'
	touch $(STAMP)

run: install
	$(BIN)/python -m app.dev

# Installs the missing system programs when it can (root or sudo -n with
# apt-get), else says in one line what to install; their tests then skip.
system-deps:
	./scripts/system-deps.sh

# Every test, then the WebSocket-facing ones again with /ws served through the
# ASGI app, as by a plain `uvicorn app.main:app` (the first pass serves it with
# app.lean, as `python -m app` does; tests/test_ws_paths.py runs the
# essentials on both in the first pass too).
WS_TESTS := tests/test_rooms.py tests/test_replay.py tests/test_slow_consumer.py \
	tests/test_drain.py tests/test_auth.py tests/test_pipelined_publish.py \
	tests/test_idle_tasks.py tests/test_catch_up_memory.py tests/test_catch_up_order.py \
	tests/test_presence.py tests/hostile
# Files are spread over TEST_WORKERS processes (pytest-xdist), each file's
# tests on one worker, so module fixtures are started once. TEST_WORKERS=0
# runs everything in this process.
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: install system-deps
	$(BIN)/python -m pytest -q $(PARALLEL)
	STREAMGATE_TEST_WS=asgi $(BIN)/python -m pytest -q $(PARALLEL) $(WS_TESTS)

# Only the second pass of `make test`.
test-asgi: install
	STREAMGATE_TEST_WS=asgi $(BIN)/python -m pytest -q $(PARALLEL) $(WS_TESTS)

# The model-based and fuzzing tests, run long (make test runs them briefly).
fuzz: install
	STREAMGATE_FUZZ_EXAMPLES=$${STREAMGATE_FUZZ_EXAMPLES:-5000} $(BIN)/python -m pytest -q \
		--timeout=0 tests/unit/test_chain_model.py tests/unit/test_feed_model.py

# CLUSTER_ARGS passes options to `ops.cluster up`, e.g. CLUSTER_ARGS="--redis cluster"
# for a 3-shard Redis Cluster instead of Sentinel.
cluster: install
	$(BIN)/python -m ops.cluster up $(CLUSTER_ARGS)

cluster-down: install
	$(BIN)/python -m ops.cluster down

cluster-status: install
	$(BIN)/python -m ops.cluster status

clean:
	rm -rf $(VENV) var .pytest_cache

# The standard benchmark scenario (docs/benchmarks.md): results under bench/results/.
# BENCH_ARGS passes options to ops.load.bench, e.g. BENCH_ARGS="--ws websockets-sansio".
bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m ops.load.bench $(BENCH_ARGS)

# One Redis against a 3-shard Redis Cluster, the same fan-out scenario
# (docs/benchmarks.md), about 4 minutes. BENCH_ARGS as above, e.g. "--rate 600".
.PHONY: bench-cluster
bench-cluster: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m ops.load.bench_cluster $(BENCH_ARGS)

# Memory held for sockets that never read (docs/benchmarks.md), about 2 minutes.
# MEMBENCH_ARGS passes options to ops.load.membench, e.g. MEMBENCH_ARGS="--phases one".
membench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m ops.load.membench $(MEMBENCH_ARGS)
