"""The room-shape phases of the benchmark (``ops.load.bench_rooms``), tiny, against
two real instances on the session Redis.

Not a measurement: it checks that each shape is built as described (sockets,
rooms, members per room), that every delivery was verified (nothing lost,
duplicated or out of order, ids as confirmed) and that the report carries
the per-message figures (server and Redis CPU, commandstats, generator).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from ops.load.client import Publisher
from ops.load.run import LoadConfig, members, room_members
from ops.load.traffic import Endpoint
from tests.support import Instance, RedisServer
from tests.support.timeouts import scaled

try:
    import picows  # noqa: F401

    CLIENT = "picows"
except ImportError:
    CLIENT = "websockets"

# phase -> (sockets, rooms, rooms per socket) for the sizes below
SHAPES = {"small-rooms": (12, 4, 1), "many-rooms": (18, 6, 1), "shared-rooms": (8, 6, 3)}
FIELDS = ("messages_per_s", "deliveries_per_s", "p99_ms", "server_cpu_us_per_message",
          "server_cpu_us_per_delivery", "redis_cpu_us_per_message", "evalsha_us_per_call",
          "publish_us_per_call", "redis_calls_per_message", "generator_cpu_util",
          "load_core_util")


def test_each_room_shape_is_verified_and_reported_per_message(
    make_instance: Callable[..., Instance], redis_server: RedisServer, tmp_path: Path
) -> None:
    limits = {"PUBLISH_RATE": "100000", "PUBLISH_BURST": "100000"}
    a, b = make_instance("BR1", **limits), make_instance("BR2", **limits)
    cmd = [sys.executable, "-m", "ops.load.bench_rooms", "--url", a.url, "--url", b.url,
           "--server-pid", str(a.pid), "--server-pid", str(b.pid),
           "--redis-pid", str(redis_server.pid), "--redis-url", redis_server.url,
           "--out", str(tmp_path), "--client", CLIENT,
           "--small-rooms", "4", "--room-size", "3", "--many-rooms", "6",
           "--shared-sockets", "8", "--rooms-per-socket", "3", "--shared-room-size", "4",
           # 200 msg/s: the Pub/Sub canaries of every instance on this Redis
           # (one PUBLISH each per 2 s) stay a small part of PUBLISH per message.
           "--room-rates", "200", "--shared-rates", "200", "--room-step-seconds", "1",
           "--idle-seconds", "0.1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(90))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "rooms.json").read_text())["by_ws"]["instances"]
    assert set(results) == set(SHAPES)
    for phase, (sockets, rooms, per_socket) in SHAPES.items():
        f = results[phase]
        shape = f["shape"]
        assert (shape["sockets"], shape["rooms"], shape["rooms_per_socket"]) == (sockets, rooms,
                                                                                per_socket), phase
        assert shape["memberships"] == sockets * per_socket
        assert shape["lanes"] == rooms and shape["publisher_sockets"] == 2
        assert f["ok"] is True, phase
        assert (f["lost"], f["duplicates"], f["disorder"], f["id_mismatch"]) == (0, 0, 0, 0), phase
        assert f["expected"] > 0 and f["delivered"] == f["expected"], phase
        step = f["steps"][0]
        for key in FIELDS:
            assert step[key] is not None, (phase, key)
        # One append (its XADD and PUBLISH inside the script) per message;
        # EVALSHA also counts the other scripts (room fills) in the window.
        calls = step["redis_calls_per_message"]
        assert 0.8 <= calls["xadd"] <= 1.2 and 0.8 <= calls["publish"] <= 1.2, (phase, calls)
        assert calls["evalsha"] >= calls["xadd"], (phase, calls)
        assert f["idle_cpu_util"] is not None
    assert "| shape |" in done.stdout


# --- the pure parts: who joins what, and whose answer is whose -----------------------


def test_room_members_alternate_over_the_instances() -> None:
    plan = members(LoadConfig(urls=["a", "b"], subscribers=40, rooms=4), "x")
    by_room: dict[str, list[str]] = {}
    for _, rooms, url in plan:
        assert len(rooms) == 1
        by_room.setdefault(rooms[0], []).append(url)
    assert len(by_room) == 4
    assert all(urls.count("a") == urls.count("b") == 5 for urls in by_room.values())


def test_a_socket_in_several_rooms_joins_distinct_ones() -> None:
    cfg = LoadConfig(urls=["a", "b"], subscribers=30, rooms=10, rooms_per_socket=3)
    plan = members(cfg, "x")
    assert all(len(set(rooms)) == 3 for _, rooms, _ in plan)
    counts = room_members(plan)
    assert sum(counts.values()) == 90 and set(counts) <= {f"lt-x-r{i}" for i in range(10)}
    assert members(cfg, "x") == plan  # a fixed draw: runs compare


def test_answers_on_a_shared_socket_reach_their_lane() -> None:
    owner = Publisher(0, "r0", Endpoint("http://127.0.0.1:1"))
    lane = Publisher(1, "r1", Endpoint("http://127.0.0.1:1"))
    lane.share(owner)
    for p in (owner, lane):
        p.sent_ns.append(0)
        p.steps.append(0)
        p.ids.append(None)
        p.ack_ns.append(0)
    owner.on_text(orjson.dumps({"type": "published", "id": "5-0", "client_id": f"{owner.run}.1.0"}))
    assert lane.ids == ["5-0"] and owner.ids == [None]
    owner.on_text(orjson.dumps({"type": "error", "code": "forbidden", "ref": f"{owner.run}.0.0"}))
    assert owner.errors == {"forbidden": 1} and lane.errors == {}
    assert lane.closed is False and lane.owner is owner
