"""`make run`'s launcher: a private redis-server when none is configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from ops.local.procs import free_port, wait_until


def test_dev_launcher_starts_and_stops_a_private_redis(tmp_path: Path) -> None:
    port, probe = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "AUTH_MODE"))}
    env.update(PORT=str(port), DEV_REDIS_PROBE_PORT=str(probe))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.dev"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, what="the launched instance to be ready")
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        assert page.status_code == 200 and "<html" in page.text.lower()
        sent = httpx.post(f"http://127.0.0.1:{port}/rooms/demo/messages?user=ann",
                          json={"body": "hello"}, timeout=5)
        assert sent.status_code == 201
        assert (tmp_path / "var" / "redis").is_dir()
        wait_until(lambda: any((tmp_path / "var" / "redis").rglob("*.aof*")), timeout=10,
                   what="the append-only file under ./var/redis")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "started a private redis-server" in out
    assert f"http://127.0.0.1:{port}/" in out
    # The private redis-server is gone with the launcher.
    def redis_gone() -> bool:
        found = subprocess.run(["pgrep", "-f", str(tmp_path / "var" / "redis")], capture_output=True)
        return not found.stdout

    wait_until(redis_gone, timeout=10, what="the private redis-server to stop")
