"""Fixtures leave no process behind, whichever step of their set-up fails.

A Sentinel topology is started with a PATH that lacks ``redis-sentinel``, or
that holds a ``redis-sentinel`` which starts but never listens: the first must
be refused before anything starts, the second must stop every process the
topology started (the redis-servers and the silent sentinel itself) before it
raises. Every process is checked by the pid it was started with.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.local import procs
from tests.failover.topology import MissingProgram, Topology
from tests.support import RedisServer
from tests.support.programs import require

SILENT_SENTINEL = "#!/bin/sh\n# Starts, never listens: a sentinel stuck at start-up.\nexec sleep 60\n"


def _bin_dir(root: Path, sentinel: str | None) -> Path:
    """A PATH directory with the real redis-server and, optionally, a
    ``redis-sentinel`` script."""
    real = shutil.which("redis-server")
    if real is None:
        pytest.skip("not installed: redis-server")
    d = root / "bin"
    d.mkdir()
    (d / "redis-server").symlink_to(real)
    if sentinel is not None:
        script = d / "redis-sentinel"
        script.write_text(sentinel)
        script.chmod(0o755)
    return d


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[procs.Proc]]:
    """Every process ops.local.procs starts during the test, as recorded at start
    (pid and start time), stopped at the end if a test left one running."""
    record: list[procs.Proc] = []
    real = procs.spawn

    def spawn(*args: Any, **kwargs: Any) -> procs.Proc:
        proc = real(*args, **kwargs)
        record.append(proc)
        return proc

    monkeypatch.setattr(procs, "spawn", spawn)
    try:
        yield record
    finally:
        procs.stop_all(record, timeout=5.0)


def _running(record: list[procs.Proc]) -> list[str]:
    return [f"{p.name} (pid {p.pid})" for p in record if procs.is_alive(p.pid, p.started)]


def test_a_missing_sentinel_skips_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[procs.Proc]
) -> None:
    monkeypatch.setenv("PATH", str(_bin_dir(tmp_path, sentinel=None)))
    with pytest.raises(pytest.skip.Exception, match="redis-sentinel"):
        require("redis-server", "redis-sentinel")
    topo = Topology(tmp_path / "topology")
    with pytest.raises(MissingProgram, match="redis-sentinel"):
        topo.start(timeout=5)
    assert topo.nodes == [] and topo.sentinels == []
    assert spawned == []


def test_a_sentinel_that_never_listens_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[procs.Proc]
) -> None:
    monkeypatch.setenv("PATH", f"{_bin_dir(tmp_path, SILENT_SENTINEL)}{os.pathsep}/bin{os.pathsep}/usr/bin")
    topo = Topology(tmp_path / "topology")
    with pytest.raises(TimeoutError, match="port"):
        topo.start(timeout=3)
    # Three redis-servers and the first sentinel were started...
    assert [p.role for p in spawned] == ["redis", "redis", "redis", "sentinel"]
    # ...and none of them runs any more.
    assert _running(spawned) == []


def test_a_redis_server_whose_start_is_interrupted_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for readiness fails with an error of its own: the process
    it was waiting for must not outlive it."""
    server = RedisServer(tmp_path / "redis")

    def broken_wait(timeout: float) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "_wait_ready", broken_wait)
    try:
        with pytest.raises(KeyboardInterrupt):
            server.start()
        assert server.proc is not None
        assert server.proc.poll() is not None, f"redis-server pid {server.proc.pid} still runs"
    finally:
        server.stop()  # only has work to do when the assertion failed
