"""The bare websockets yardstick (``ops.load.bare``) that ``ops.load.bench
--ws bare`` sets streamgate against: it must carry the generator's traffic
and pass the same verification, or the comparison means nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.local import probes, procs
from tests.support import RedisServer
from tests.support.timeouts import scaled

try:
    import picows  # noqa: F401

    CLIENT = "picows"
except ImportError:
    CLIENT = "websockets"


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[procs.Proc]:
    port = procs.free_port()
    proc = procs.spawn("bare", "app", [sys.executable, "-m", "ops.load.bare", "--port", str(port)],
                       port, tmp_path / "bare.log", cwd=procs.REPO_ROOT)
    try:
        probes.wait_http_ok(f"http://127.0.0.1:{port}/readyz", scaled(20), watch=[proc])
        yield proc
    finally:
        procs.stop_proc(proc)


def test_small_rooms_through_the_bare_server_are_verified(
    bare: procs.Proc, redis_server: RedisServer, tmp_path: Path
) -> None:
    cmd = [sys.executable, "-m", "ops.load.bench_rooms", "--url", f"http://127.0.0.1:{bare.port}",
           "--server-pid", str(bare.pid), "--redis-pid", str(redis_server.pid),
           "--out", str(tmp_path), "--client", CLIENT, "--phases", "small-rooms",
           "--small-rooms", "4", "--room-size", "3", "--room-rates", "40",
           "--room-step-seconds", "1", "--idle-seconds", "0.1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(60))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    f = json.loads((tmp_path / "rooms.json").read_text())["by_ws"]["instances"]["small-rooms"]
    assert f["ok"] is True
    assert (f["lost"], f["duplicates"], f["disorder"], f["id_mismatch"]) == (0, 0, 0, 0)
    assert f["expected"] > 0 and f["delivered"] == f["expected"]
    assert f["steps"][0]["server_cpu_us_per_message"] is not None


def test_bench_runs_the_big_room_and_idle_against_the_bare_server_and_skips_replay(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "ops.load.bench", "--ws", "bare", "--phases", "fixed,idle,replay",
           "--subscribers", "20", "--fixed-rate", "20", "--fixed-seconds", "1", "--idle", "30",
           "--client", CLIENT, "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(90), cwd=procs.REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (summary,) = tmp_path.glob("*/summary.json")
    bare = json.loads(summary.read_text())["by_ws"]["bare"]
    assert set(bare) == {"fixed", "idle"}, "the bare server keeps no history: no replay phase"
    assert bare["idle"]["connections"] == 30 and bare["idle"]["failed"] == 0
    fixed = bare["fixed"]
    assert fixed["ok"] is True and (fixed["lost"], fixed["duplicates"], fixed["disorder"]) == (0, 0, 0)
    assert fixed["deliveries_per_server_cpu_s"]


def test_a_failed_phase_is_named_and_the_others_figures_kept(tmp_path: Path) -> None:
    """An instance that cannot start (a --ws that uvicorn does not know) fails
    its phase; the bare server's figures from the same run are still
    written, and the run says which phase failed and exits 1."""
    cmd = [sys.executable, "-m", "ops.load.bench", "--ws", "bare,no-such-ws", "--phases", "fixed",
           "--subscribers", "20", "--fixed-rate", "20", "--fixed-seconds", "1",
           "--client", CLIENT, "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(90), cwd=procs.REPO_ROOT)
    (summary,) = tmp_path.glob("*/summary.json")
    by_ws = json.loads(summary.read_text())["by_ws"]
    assert by_ws["bare"]["fixed"]["ok"] is True
    assert "error" in by_ws["no-such-ws"]["fixed"]
    assert done.returncode == 1 and "no-such-ws: fixed" in done.stderr
