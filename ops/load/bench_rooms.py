"""The chat shapes of ``ops.load.bench``: many small rooms, where the cost is per
published message rather than per delivery.

Same machinery as the one-room phases (two fresh instances pinned to one
core, Redis and the generator on the other, every delivery verified by id),
different shapes (sizes are flags, see :func:`add_args`):

- ``small-rooms``: 200 rooms of 10 members, one room per socket (2,000
  sockets); the members of each room alternate between the two instances,
  as behind a round-robin balancer, so both instances handle every message.
- ``many-rooms``: 1,000 rooms of 10 (10,000 sockets).
- ``shared-rooms``: 2,000 sockets each in 20 rooms drawn at random (fixed
  seed) out of 400, so a room has ~100 members (binomial, about ±10).
  (``--shared-sockets 5000`` is the 5,000-socket version: 100,000 joins,
  minutes of connecting on a two-core machine.)

Before measuring, one message goes to every room (verified, not timed): a
room's first entry creates its stream, and each instance reads the room
once on its first notification; chat rooms have history, so that cost
belongs to no step. Subscribers connect 50 at a time (a socket's joins are
sent together).

Two publisher sockets (one per instance) carry the messages, ~100-byte
bodies, round-robin over the rooms, the rate stepped up; a step passes with
>= 99.9 % delivered and p99 <= 100 ms. Per step: messages/s and
deliveries/s, both instances' CPU per published message (``/proc``, over
the step), redis-server's CPU per message (``/proc``) and its
``INFO commandstats`` per call (reset before the step), and the share of
the load core used by the generator and Redis together: near 1.0 the load
side, not the servers, limits the step.

``python -m ops.load.bench_rooms`` runs the same phases against instances that
are already running (``--url``, ``--server-pid``, ``--redis-pid``,
``--redis-url``), without pinning: for a quick look, and for the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from ops.load import loadtest

PHASES = ("small-rooms", "many-rooms", "shared-rooms")
# Measured: two instances on one core pass about 500 msg/s in rooms of 10.
# Up to 8,500 msg/s: 85,000 deliveries/s in rooms of 10, the small-rooms target.
ROOM_RATES = (300.0, 600.0, 1000.0, 1500.0, 2000.0, 3000.0, 4500.0, 6000.0, 8500.0)
SHARED_RATES = (25.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0)
# Generator and Redis share one core: above this share of it, they may be the limit.
LOAD_CORE_BUSY = 0.85
SMALL_ROOMS_TARGET = ("Target for small-rooms: >= 85,000 deliveries/s sustained, server <= 100 µs and "
                      "Redis <= 15 µs per published message.")


class StackLike(Protocol):
    @property
    def urls(self) -> list[str]: ...
    @property
    def app_pids(self) -> list[int]: ...
    @property
    def redis_pid(self) -> int | None: ...
    @property
    def redis_url(self) -> str | None: ...


@dataclass
class Running:
    """Instances and a Redis started by someone else."""

    urls: list[str]
    app_pids: list[int] = field(default_factory=list)
    redis_pid: int | None = None
    redis_url: str | None = None


@dataclass(frozen=True)
class Shape:
    sockets: int
    rooms: int
    rooms_per_socket: int
    rates: tuple[float, ...]

    @property
    def text(self) -> str:
        if self.rooms_per_socket == 1:
            return f"{self.rooms} rooms of {self.sockets // max(self.rooms, 1)} ({self.sockets} sockets)"
        size = self.sockets * self.rooms_per_socket / max(self.rooms, 1)
        return (f"{self.sockets} sockets each in {self.rooms_per_socket} of {self.rooms} rooms "
                f"(~{size:.0f} members a room)")


@dataclass(frozen=True)
class RoomsConfig:
    room_size: int = 10
    small_rooms: int = 200
    many_rooms: int = 1000
    shared_sockets: int = 2000
    rooms_per_socket: int = 20
    shared_room_size: int = 100
    rates: tuple[float, ...] = ROOM_RATES
    shared_rates: tuple[float, ...] = SHARED_RATES
    step_seconds: float = 6.0
    publishers: int = 2
    body_bytes: int = 100
    idle_seconds: float = 2.0
    connect_concurrency: int = 50  # handshakes (and their joins) in flight

    def shape(self, phase: str) -> Shape:
        if phase == "small-rooms":
            return Shape(self.small_rooms * self.room_size, self.small_rooms, 1, self.rates)
        if phase == "many-rooms":
            return Shape(self.many_rooms * self.room_size, self.many_rooms, 1, self.rates)
        if phase == "shared-rooms":
            rooms = max(1, round(self.shared_sockets * self.rooms_per_socket / self.shared_room_size))
            return Shape(self.shared_sockets, rooms, self.rooms_per_socket, self.shared_rates)
        raise ValueError(phase)

    def most_sockets(self) -> int:
        return max(self.shape(p).sockets for p in PHASES)


def pad_for(body_bytes: int) -> int:
    """Padding that makes the generator's JSON body about ``body_bytes`` long."""
    base = len(orjson.dumps({"p": 999, "s": 99_999, "t": time.monotonic_ns(), "k": 9, "x": ""}))
    return max(0, body_bytes - base)


def run_phase(stack: StackLike, rc: RoomsConfig, phase: str, ws: str, client: str,
              other_cores: list[int] | None, out_dir: Path) -> dict[str, Any]:
    shape = rc.shape(phase)
    cfg = loadtest.LoadConfig(
        urls=stack.urls, subscribers=shape.sockets, rooms=shape.rooms,
        rooms_per_socket=shape.rooms_per_socket, publishers=rc.publishers,
        steps=list(shape.rates), step_seconds=rc.step_seconds, procs=1, client=client,
        pad=pad_for(rc.body_bytes), concurrency=rc.connect_concurrency, connect_timeout=300.0,
        server_pids=stack.app_pids, watch_pids=[stack.redis_pid] if stack.redis_pid else [],
        redis_url=stack.redis_url, idle_seconds=rc.idle_seconds, warm_up=True, cpus=other_cores,
        stop_on_fail=True, out=str(out_dir / f"{ws}-{phase}.json"),
        label=f"{ws}: {phase}, {shape.text}, 2 instances on one core",
    )
    report = loadtest.run(cfg)
    for line in loadtest.summary_lines(report):
        print("  " + line, flush=True)
    for row in report["steps"]:
        f = per_message(row, report)
        print(f"  step {row['index']}: {f['messages_per_s']:,} msg/s, server "
              f"{f['server_cpu_us_per_message']} µs/msg, Redis {f['redis_cpu_us_per_message']} "
              f"µs/msg (EVALSHA {f['evalsha_us_per_call']} µs/call), load core "
              f"{f['load_core_util']:.0%}{' BUSY' if f['load_core_busy'] else ''}", flush=True)
    return report


def per_message(row: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """One step's figures per published message (what the room phases compare)."""
    cmds = row.get("redis_commands") or {}
    msgs = row.get("confirmed") or 0
    gen = row.get("generator_cpu_util") or 0.0
    red = row.get("watched_cpu_util") or 0.0
    lat = row.get("latency_ms") or {}

    def per_call(cmd: str) -> float | None:
        c = cmds.get(cmd)
        return round(c["usec_per_call"], 2) if c else None

    return {
        "rate": row["rate"], "pass": row["pass"],
        "messages_per_s": row.get("messages_per_s"),
        "deliveries_per_s": row.get("deliveries_per_s"),
        "delivered_ratio": row.get("delivered_ratio"),
        "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"),
        "server_cpu_util": _r(row.get("server_cpu_util")),
        "server_cpu_us_per_message": row.get("server_cpu_us_per_message"),
        "server_cpu_us_per_delivery": row.get("server_cpu_us_per_delivery"),
        "deliveries_per_server_cpu_s": row.get("deliveries_per_server_cpu_s"),
        "redis_cpu_util": _r(red),
        "redis_cpu_us_per_message": row.get("watched_cpu_us_per_message"),
        "evalsha_us_per_call": per_call("evalsha"),
        "publish_us_per_call": per_call("publish"),
        "redis_calls_per_message": ({k: round(v["calls"] / msgs, 3) for k, v in cmds.items()}
                                    if msgs else None),
        "generator_cpu_util": _r(gen),
        "load_core_util": _r(gen + red),
        "load_core_busy": gen + red > LOAD_CORE_BUSY,
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def figures(report: dict[str, Any]) -> dict[str, Any]:
    t = report["totals"]
    h = report["headline"]
    steps = [per_message(r, report) for r in report["steps"]]
    best = next((s for r, s in zip(report["steps"], steps) if h and r["index"] == h["step"]), None)
    return {"file": report.get("files", {}).get("json"), "ok": report["ok"],
            "lost": t["lost"], "duplicates": t["duplicates"], "disorder": t["disorder"],
            "id_mismatch": t["id_mismatch"], "expected": t["expected"], "delivered": t["delivered"],
            "shape": report["shape"], "idle_cpu_util": report.get("idle_cpu_util"),
            "headline": best, "steps": steps,
            "generator_utilization": report["generator"]["utilization"],
            "generator_saturated": report["generator"]["saturated"],
            "loadavg": report["host"]["loadavg_end"]}


# --- the summary ------------------------------------------------------------------------

COLUMNS = (
    ("best passing msg/s", "messages_per_s", "{:,.0f}"),
    ("deliveries/s", "deliveries_per_s", "{:,.0f}"),
    ("p99 ms", "p99_ms", "{:.1f}"),
    ("server µs/msg", "server_cpu_us_per_message", "{:,.1f}"),
    ("server µs/delivery", "server_cpu_us_per_delivery", "{:.2f}"),
    ("deliveries per server CPU-s", "deliveries_per_server_cpu_s", "{:,.0f}"),
    ("Redis µs/msg", "redis_cpu_us_per_message", "{:.1f}"),
    ("EVALSHA µs/call", "evalsha_us_per_call", "{:.1f}"),
    ("PUBLISH µs/call", "publish_us_per_call", "{:.1f}"),
    ("load core", "load_core_util", "{:.0%}"),
)


def _cell(fmt: str, v: Any) -> str:
    return "-" if v is None else fmt.format(v)


def summary_table(results: dict[str, Any]) -> str:
    """Markdown: the one-room reference and each room shape, then the ratios."""
    out: list[str] = []
    for ws, res in results["by_ws"].items():
        rows: list[tuple[str, dict[str, Any], str]] = []
        fixed = (res.get("fixed") or {}).get("per_message")
        if fixed:
            rows.append((f"fixed: 1 room of 1,000 (its one rate, passed: {fixed['pass']})", fixed,
                         str(res["fixed"].get("ok"))))
        for phase in PHASES:
            f = res.get(phase)
            if f and "error" in f:
                rows.append((f"{phase}: failed ({f['error'][:80]})", {}, "False"))
            elif f:
                shape = f["shape"]
                text = Shape(shape["sockets"], shape["rooms"], shape["rooms_per_socket"], ()).text
                rows.append((f"{phase}: {text}", f["headline"] or {}, str(f["ok"])))
        if len(rows) < 1 or not any(p in res for p in PHASES):
            continue
        out += ["", f"## rooms ({ws})", "",
                "| shape | " + " | ".join(c[0] for c in COLUMNS) + " | verified |",
                "| --- | " + " | ".join("---" for _ in COLUMNS) + " | --- |"]
        for name, f, ok in rows:
            out.append(f"| {name} | " + " | ".join(_cell(fmt, f.get(key)) for _, key, fmt in COLUMNS)
                       + f" | {ok} |")
        out += [""] + ratio_lines(res)
    if out:
        out += ["", SMALL_ROOMS_TARGET]
    return "\n".join(out) + "\n" if out else ""


def ratio_lines(res: dict[str, Any]) -> list[str]:
    """Each room shape against the one big room (``fixed``) of the same run."""
    fixed = (res.get("fixed") or {}).get("per_message") or {}
    per_delivery = fixed.get("server_cpu_us_per_delivery")
    big = fixed.get("deliveries_per_server_cpu_s")
    lines = []
    for phase in PHASES:
        f = res.get(phase)
        h = (f or {}).get("headline")
        if not h:
            if f and "error" not in f:
                lines.append(f"- {phase}: no step passed")
            continue
        shape = f["shape"]  # type: ignore[index]
        fan = shape["memberships"] / max(shape["rooms"], 1)
        us_msg = h["server_cpu_us_per_message"]
        txt = f"- {phase}: {h['messages_per_s']:,.0f} msg/s at best"
        if big and h.get("deliveries_per_server_cpu_s"):
            txt += (f"; {h['deliveries_per_server_cpu_s']:,} deliveries per server CPU-s, "
                    f"×{h['deliveries_per_server_cpu_s'] / big:.3f} of the one big room's {big:,}")
        if per_delivery and us_msg:
            fixed_part = us_msg - fan * per_delivery
            txt += (f"; server {us_msg:,.0f} µs per message = {fan:.0f} deliveries × "
                    f"{per_delivery:.2f} µs (the big room's cost per delivery) + "
                    f"{fixed_part:,.0f} µs per message ({fixed_part / us_msg:.0%})")
        lines.append(txt)
        if f["generator_saturated"] or h.get("load_core_busy"):  # type: ignore[index]
            lines.append(f"  - load core (generator + Redis) {h['load_core_util']:.0%} busy at "
                         "that step: the load side may be part of the limit")
    return lines


# --- options -------------------------------------------------------------------------------


def add_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("room shapes (phases " + ", ".join(PHASES) + ")")
    d = RoomsConfig()
    g.add_argument("--room-size", type=int, default=d.room_size,
                   help="members per room in small-rooms and many-rooms")
    g.add_argument("--small-rooms", type=int, default=d.small_rooms)
    g.add_argument("--many-rooms", type=int, default=d.many_rooms,
                   help="rooms in many-rooms (sockets = rooms x room size)")
    g.add_argument("--shared-sockets", type=int, default=d.shared_sockets)
    g.add_argument("--rooms-per-socket", type=int, default=d.rooms_per_socket)
    g.add_argument("--shared-room-size", type=int, default=d.shared_room_size,
                   help="members per room in shared-rooms (sets the number of rooms)")
    g.add_argument("--room-rates", default=",".join(f"{r:g}" for r in d.rates),
                   help="msg/s steps for small-rooms and many-rooms")
    g.add_argument("--shared-rates", default=",".join(f"{r:g}" for r in d.shared_rates))
    g.add_argument("--room-step-seconds", type=float, default=d.step_seconds)
    g.add_argument("--room-publishers", type=int, default=d.publishers)
    g.add_argument("--body-bytes", type=int, default=d.body_bytes)
    g.add_argument("--idle-seconds", type=float, default=d.idle_seconds,
                   help="CPU measured with everyone joined and nothing published")
    g.add_argument("--connect-concurrency", type=int, default=d.connect_concurrency,
                   help="subscriber handshakes (and their joins) in flight")


def from_args(a: argparse.Namespace) -> RoomsConfig:
    return replace(
        RoomsConfig(), room_size=a.room_size, small_rooms=a.small_rooms, many_rooms=a.many_rooms,
        shared_sockets=a.shared_sockets, rooms_per_socket=a.rooms_per_socket,
        shared_room_size=a.shared_room_size,
        rates=tuple(float(x) for x in a.room_rates.split(",") if x.strip()),
        shared_rates=tuple(float(x) for x in a.shared_rates.split(",") if x.strip()),
        step_seconds=a.room_step_seconds, publishers=a.room_publishers, body_bytes=a.body_bytes,
        idle_seconds=a.idle_seconds, connect_concurrency=a.connect_concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ops.load.bench_rooms",
                                 description="the room-shape phases against running instances")
    ap.add_argument("--url", action="append", required=True, help="instance base URL (repeat)")
    ap.add_argument("--server-pid", type=int, action="append", default=[])
    ap.add_argument("--redis-pid", type=int)
    ap.add_argument("--redis-url", help="for INFO commandstats (resets its stats)")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--ws", default="instances", help="a name for the results")
    ap.add_argument("--client", choices=("picows", "websockets"), default="picows")
    ap.add_argument("--out", required=True, help="a directory for the results")
    add_args(ap)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stack = Running(a.url, a.server_pid, a.redis_pid, a.redis_url)
    rc = from_args(a)
    res: dict[str, Any] = {}
    for phase in (p.strip() for p in a.phases.split(",") if p.strip()):
        res[phase] = figures(run_phase(stack, rc, phase, a.ws, a.client, None, out))
    results = {"by_ws": {a.ws: res}}
    (out / "rooms.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(summary_table(results), flush=True)
    return 0 if all(f["ok"] for f in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
