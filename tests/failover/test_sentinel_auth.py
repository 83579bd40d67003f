"""Passwords on both sides: a password-protected Sentinel in front of a
password-protected master. Instances find the master through the sentinel
(REDIS_SENTINEL_PASSWORD) and log in to it (REDIS_PASSWORD)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from ops.local import procs
from tests.support import Instance
from tests.support.instance import InstanceStartError
from tests.support.programs import require

pytestmark = pytest.mark.failover

MASTER_SECRET = "master-secret-7f3a"
SENTINEL_SECRET = "sentinel-secret-91c2"


def test_instances_use_the_sentinel_and_master_passwords(tmp_path: Path) -> None:
    require("redis-server", "redis-sentinel")
    rport, sport = procs.free_ports(2)
    servers: list[procs.Proc] = []
    started: list[Instance] = []
    try:
        servers.append(procs.start_redis(rport, tmp_path / "redis", extra_args=[
            "--min-replicas-to-write", "0", "--requirepass", MASTER_SECRET]))
        servers.append(procs.start_sentinel(sport, tmp_path / "sentinel", rport, quorum=1, extra_args=[
            "--requirepass", SENTINEL_SECRET, "--sentinel", "auth-pass", "mymaster", MASTER_SECRET]))
        probe = redis.Redis(port=sport, password=SENTINEL_SECRET, socket_timeout=1)
        procs.wait_until(lambda: probe.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"),
                         timeout=10, what="the sentinel to know the master")
        probe.close()
        env = {
            "AUTH_MODE": "none",
            "REDIS_SENTINELS": f"127.0.0.1:{sport}",
            "REDIS_SENTINEL_PASSWORD": SENTINEL_SECRET,
            "REDIS_PASSWORD": MASTER_SECRET,
        }
        good = Instance("SA", env, workdir=tmp_path / "good")
        started.append(good)
        good.start()
        sent = httpx.post(f"{good.url}/rooms/locked/messages?user=ann", json={"body": "in"}, timeout=5)
        assert sent.status_code == 201
        history = httpx.get(f"{good.url}/rooms/locked/messages?user=ann", timeout=5).json()
        assert [m["id"] for m in history["messages"]] == [sent.json()["id"]]

        # Without the sentinel's password the master cannot be found: never ready.
        blind = Instance("SB", {**env, "REDIS_SENTINEL_PASSWORD": ""}, workdir=tmp_path / "blind")
        started.append(blind)
        with pytest.raises(InstanceStartError):
            blind.start(timeout=6)
    finally:
        for inst in started:
            if inst.is_running():
                inst.stop()
        procs.stop_all(servers)
