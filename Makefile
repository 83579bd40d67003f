PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-asgi fuzz bench membench cluster cluster-down cluster-status clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/python -m app.dev

test: install
	$(BIN)/python -m pytest -q

# The WebSocket-facing tests again with /ws served through the ASGI app, as by
# a plain `uvicorn app.main:app` (make test serves it with app.lean, as
# `python -m app` does; tests/test_ws_paths.py runs the essentials on both).
WS_TESTS := tests/test_rooms.py tests/test_replay.py tests/test_slow_consumer.py \
	tests/test_drain.py tests/test_auth.py tests/test_pipelined_publish.py \
	tests/test_idle_tasks.py tests/test_catch_up_memory.py tests/test_catch_up_order.py \
	tests/test_presence.py tests/hostile
test-asgi: install
	STREAMGATE_TEST_WS=asgi $(BIN)/python -m pytest -q $(WS_TESTS)

# The model-based and fuzzing tests, run long (make test runs them briefly).
fuzz: install
	STREAMGATE_FUZZ_EXAMPLES=$${STREAMGATE_FUZZ_EXAMPLES:-5000} $(BIN)/python -m pytest -q \
		--timeout=0 tests/unit/test_chain_model.py tests/unit/test_feed_model.py

cluster: install
	$(BIN)/python -m ops.cluster up

cluster-down: install
	$(BIN)/python -m ops.cluster down

cluster-status: install
	$(BIN)/python -m ops.cluster status

clean:
	rm -rf $(VENV) var .pytest_cache

# The standard benchmark scenario (docs/benchmarks.md): results under bench/results/.
# BENCH_ARGS passes options to ops.bench, e.g. BENCH_ARGS="--ws websockets-sansio".
bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m ops.bench $(BENCH_ARGS)

# Memory held for sockets that never read (docs/benchmarks.md), about 2 minutes.
# MEMBENCH_ARGS passes options to ops.membench, e.g. MEMBENCH_ARGS="--phases one".
membench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m ops.membench $(MEMBENCH_ARGS)
