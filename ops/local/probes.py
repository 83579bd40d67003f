"""Readiness checks for the local Redis, Sentinel and HTTP processes.

"The port is open" is not "ready". These checks encode what each piece must
report before the next one may rely on it:

- a replica is useful only once ``master_link_status:up``;
- a sentinel can fail over only once it knows the replica (from the master's
  INFO) and the other sentinels (from their hello messages on the master).
  Right after start-up it does not, and ``SENTINEL FAILOVER`` or a real
  failure ends in NOGOODSLAVE for up to ~10 s;
- an app instance serves once /healthz answers 200.

All clients use short socket timeouts and no retries, so a probe of a frozen
process returns (False) instead of hanging; callers poll with
``procs.wait_until`` under a deadline.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ops.local.procs import LOOPBACK, Proc, wait_until
from ops.local.render import MASTER_NAME


def client(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> redis.Redis:
    """A sync client for one Redis or Sentinel process; no retries."""
    return redis.Redis(host=host, port=port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
                       decode_responses=True)


def ping(port: int) -> bool:
    try:
        with client(port) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


def role(port: int) -> str | None:
    """``master``, ``slave`` or ``sentinel`` (the ROLE command), None if unreachable."""
    try:
        with client(port) as r:
            return str(r.execute_command("ROLE")[0])
    except redis.RedisError:
        return None


def replica_link_up(port: int) -> bool:
    """Whether the replica on ``port`` is connected to its master and in sync."""
    try:
        with client(port) as r:
            info = r.info("replication")
    except redis.RedisError:
        return False
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def stream_entries(r: redis.Redis, key: str, page: int = 1000) -> list[tuple[str, dict[str, str]]]:
    """Every entry of one stream on one node, read directly in pages: what a
    node really holds, including entries past any confirmed watermark."""
    out: list[tuple[str, dict[str, str]]] = []
    start = "-"
    while True:
        rows = r.xrange(key, min=start, max="+", count=page)
        out += [(str(sid), dict(fields)) for sid, fields in rows]
        if len(rows) < page:
            return out
        start = f"({rows[-1][0]}"


def sentinel_master_addr(port: int, master_name: str = MASTER_NAME) -> tuple[str, int] | None:
    """Where the sentinel on ``port`` says the master is."""
    try:
        with client(port) as r:
            addr = r.sentinel_get_master_addr_by_name(master_name)
    except redis.RedisError:
        return None
    return (str(addr[0]), int(addr[1])) if addr else None


def sentinel_ready(port: int, master_name: str = MASTER_NAME, *, replicas: int = 1,
                   sentinels: int = 3) -> bool:
    """Whether this sentinel could fail the master over right now.

    It must see the master as up, at least ``replicas`` replicas that are up
    with their link ok (``SENTINEL REPLICAS``), and the ``sentinels - 1``
    other sentinels (``SENTINEL SENTINELS``).
    """
    try:
        with client(port) as r:
            master = r.sentinel_master(master_name)
            found = r.sentinel_slaves(master_name)
            others = r.sentinel_sentinels(master_name)
    except redis.RedisError:
        return False
    if not master.get("is_master") or master.get("is_sdown") or master.get("is_odown"):
        return False
    good = [s for s in found if not s.get("is_sdown") and not s.get("is_disconnected")
            and s.get("master-link-status") == "ok"]
    return len(good) >= replicas and len(others) >= sentinels - 1


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET ``url``, None if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


# --- bounded waits ----------------------------------------------------------------


def every_shard_served(url: str, timeout: float = 2.0) -> bool:
    """``/readyz`` at ``url`` answers 200 and names no degraded shard.

    In cluster mode an instance stays ready while one shard is in failover
    (it lists it under ``degraded``); "whole again" needs every shard."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
            return int(resp.status) == 200 and not body.get("degraded")
    except (OSError, ValueError):
        return False


def wait_redis(port: int, timeout: float = 10.0, proc: Proc | None = None) -> None:
    wait_until(lambda: ping(port), timeout, what=f"redis :{port} PING",
               watch=[proc] if proc else [])


def wait_replica_link(port: int, timeout: float = 15.0, proc: Proc | None = None) -> None:
    wait_until(lambda: replica_link_up(port), timeout,
               what=f"replica :{port} master_link_status:up", watch=[proc] if proc else [])


def wait_sentinels(ports: Sequence[int], timeout: float = 30.0, *,
                   master_name: str = MASTER_NAME, replicas: int = 1,
                   watch: Sequence[Proc] = ()) -> None:
    """Wait until every sentinel sees the master, the replicas and each other."""
    n = len(ports)
    wait_until(
        lambda: all(sentinel_ready(p, master_name, replicas=replicas, sentinels=n)
                    for p in ports),
        timeout, interval=0.2, what=f"sentinels {list(ports)} to see master, "
        f"{replicas} replica(s) and each other", watch=watch,
    )


def wait_http_ok(url: str, timeout: float = 30.0, watch: Sequence[Proc] = ()) -> None:
    wait_until(lambda: http_status(url) == 200, timeout, interval=0.1,
               what=f"GET {url} -> 200", watch=watch)
