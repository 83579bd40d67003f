"""What one publish costs: a micro-benchmark of the append path.

``python -m ops.load.pubbench`` starts its own redis-server (no persistence, a
free loopback port) and measures two things, each over many small rooms
(chat-shaped traffic; 200 rooms by default):

- ``log``: :meth:`streams.log.RoomLog.append` called directly by
  ``--concurrency`` tasks, round-robin over the rooms. No instance, no
  socket: the cost of the Redis layer alone.
- ``instance``: one real instance (uvicorn, ``--ws websockets-sansio``) fed
  by ``--sockets`` publisher sockets, each keeping ``--window`` publish
  frames in flight, round-robin over the rooms; one more socket has joined
  every room, so each message also takes the notification path once
  (Pub/Sub parse, chain, ``message`` frame). Every answer and every
  delivery is counted; a missing one fails the run.

Reported per append: appends/s, client CPU (this process in ``log`` mode,
the instance in ``instance`` mode) and Redis CPU, both from
``/proc/<pid>/stat``, and ``INFO commandstats`` after a ``CONFIG
RESETSTAT``: µs per EVALSHA and the commands the script ran per append.

``--app-cwd DIR`` runs another checkout's code (its ``streams`` package in
``log`` mode, its app in ``instance`` mode) with this generator, so two
versions compare as a ratio on the same machine. ``--profile FILE`` records
the instance with py-spy while it is measured (``instance`` mode).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ops.local import probes, procs
from ops.load.stats import read_usage

def _cpu(pid: int) -> float:
    usage = read_usage(pid)
    return usage.cpu_s if usage is not None else 0.0


def _redis_report(stats: dict[str, dict[str, float]], n: int, cpu_s: float) -> dict[str, Any]:
    evalsha = stats.get("evalsha", {})
    per_append = {cmd: round(v["calls"] / n, 2) for cmd, v in sorted(stats.items())
                  if cmd not in ("config|resetstat", "info")}
    return {
        "redis_cpu_us_per_append": round(cpu_s / n * 1e6, 1),
        "evalsha_usec_per_call": evalsha.get("usec_per_call"),
        "commandstats_usec_per_append": round(
            sum(v["usec"] for c, v in stats.items() if c not in ("config|resetstat", "info")) / n, 1),
        "calls_per_append": per_append,
        "usec_per_call": {cmd: v["usec_per_call"] for cmd, v in sorted(stats.items())
                          if per_append.get(cmd, 0) >= 0.5},
    }


def _py_spy() -> str:
    """The py-spy next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def _body(i: int, size: int) -> str:
    return json.dumps({"n": i, "t": "x" * max(0, size - 20)})


# -- log mode ------------------------------------------------------------------


async def _log_run(port: int, args: argparse.Namespace) -> dict[str, Any]:
    if args.app_cwd:
        sys.path.insert(0, str(Path(args.app_cwd).resolve()))
    from streams.connection import RedisConnector, RedisSettings
    from streams.keys import Keys
    from streams.log import RoomLog
    from streams.retry import RetryPolicy

    conn = RedisConnector(RedisSettings(url=f"redis://127.0.0.1:{port}/0"))
    log = RoomLog(conn.client, Keys(f"pb{uuid.uuid4().hex[:6]}"), 10000, RetryPolicy(5.0))
    rooms = [f"room-{i}" for i in range(args.rooms)]
    bodies = [_body(i, args.body_bytes) for i in range(64)]
    counter = iter(range(10**12))

    async def worker(total: int) -> None:
        for _ in range(total):
            i = next(counter)
            cid = f"c{i}" if args.client_ids else None
            await log.append(rooms[i % len(rooms)], f"user{i % 10}", bodies[i % 64], cid)

    await asyncio.gather(*(worker(50) for _ in range(args.concurrency)))  # warm-up
    each = args.appends // args.concurrency
    n = each * args.concurrency
    r = conn.client
    await r.config_resetstat()
    redis_before, mine_before = _cpu(args.redis_pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(each) for _ in range(args.concurrency)))
    wall = time.perf_counter() - started
    mine, redis_cpu = time.process_time() - mine_before, _cpu(args.redis_pid) - redis_before
    stats = {k.removeprefix("cmdstat_"): v for k, v in (await r.info("commandstats")).items()}
    await conn.close()
    return {"mode": "log", "appends": n, "concurrency": args.concurrency,
            "appends_per_s": round(n / wall), "client_cpu_us_per_append": round(mine / n * 1e6, 1),
            **_redis_report(stats, n, redis_cpu)}


# -- instance mode -------------------------------------------------------------


async def _instance_run(port: int, app_pid: int, app_port: int,
                        args: argparse.Namespace) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    import redis.asyncio as aioredis

    url = f"ws://127.0.0.1:{app_port}/ws"
    rooms = [f"room-{i}" for i in range(args.rooms)]
    bodies = [_body(i, args.body_bytes) for i in range(64)]
    delivered = 0
    done = asyncio.Event()
    each = args.appends // args.sockets
    total = each * args.sockets + args.sockets * 50

    async def subscriber(ready: asyncio.Event) -> None:
        nonlocal delivered
        async with connect(url + "?user=reader", max_size=None) as ws:
            await ws.recv()  # welcome
            for room in rooms:
                await ws.send(json.dumps({"type": "join", "room": room, "since": "$"}))
            joined = 0
            while joined < len(rooms):
                frame = json.loads(await ws.recv())
                if frame["type"] == "error":
                    raise RuntimeError(f"join answered {frame}")
                joined += frame["type"] == "joined"
            ready.set()
            async for raw in ws:
                if '"type":"message"' in str(raw):
                    delivered += 1
                    if delivered >= total:
                        done.set()
                        return

    async def publisher(k: int, count: int) -> None:
        async with connect(url + f"?user=user{k}", max_size=None) as ws:
            await ws.recv()
            window = asyncio.Semaphore(args.window)

            async def answers() -> None:
                for _ in range(count):
                    frame = json.loads(await ws.recv())
                    if frame["type"] != "published":
                        raise RuntimeError(f"publish answered {frame}")
                    window.release()

            reader = asyncio.create_task(answers())
            for i in range(count):
                await window.acquire()
                j = k + i * args.sockets
                await ws.send(json.dumps({"type": "publish", "room": rooms[j % len(rooms)],
                                          "body": json.loads(bodies[j % 64])}))
            await reader

    ready = asyncio.Event()
    sub = asyncio.create_task(subscriber(ready))
    await asyncio.wait_for(ready.wait(), 60)
    await asyncio.gather(*(publisher(k, 50) for k in range(args.sockets)))  # warm-up
    r = aioredis.Redis(port=port)
    await r.config_resetstat()
    profiler = None
    if args.profile:
        profiler = subprocess.Popen(
            [_py_spy(), "record", "-o", args.profile, "--pid", str(app_pid), "-r", "200",
             *(["-f", "speedscope"] if args.profile.endswith(".json") else []),
             *(["-f", "raw"] if args.profile.endswith(".txt") else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1.0)
    app_before, redis_before = _cpu(app_pid), _cpu(args.redis_pid)
    mine_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(publisher(k, each) for k in range(args.sockets)))
    await asyncio.wait_for(done.wait(), 60)
    wall = time.perf_counter() - started
    app_cpu, redis_cpu = _cpu(app_pid) - app_before, _cpu(args.redis_pid) - redis_before
    mine = time.process_time() - mine_before
    stats = {k.removeprefix("cmdstat_"): v for k, v in (await r.info("commandstats")).items()}
    await r.aclose()
    if profiler is not None:
        profiler.send_signal(2)
        profiler.wait(30)
    sub.cancel()
    n = each * args.sockets
    return {"mode": "instance", "appends": n, "sockets": args.sockets, "window": args.window,
            "appends_per_s": round(n / wall),
            "instance_cpu_us_per_append": round(app_cpu / n * 1e6, 1),
            "generator_cpu_us_per_append": round(mine / n * 1e6, 1),
            **_redis_report(stats, n, redis_cpu)}


# -- processes -----------------------------------------------------------------


def _start_redis(root: Path) -> procs.Proc:
    port = procs.free_port()
    d = root / "redis"
    d.mkdir(parents=True, exist_ok=True)
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", str(d), "--daemonize", "no", "--logfile", ""]
    proc = procs.spawn(f"redis-{port}", "redis", cmd, port, d / "redis.log")
    probes.wait_redis(port, 10.0, proc)
    return proc


def _start_app(root: Path, redis_port: int, args: argparse.Namespace) -> procs.Proc:
    port = procs.free_port()
    env = {**os.environ, "AUTH_MODE": "none", "ALLOWED_ORIGINS": "*",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "PUBLISH_RATE": "1000000", "PUBLISH_BURST": "1000000",
           "CONTROL_RATE": "1000000", "CONTROL_BURST": "1000000", "MAX_JOINS": "100000",
           "KEY_PREFIX": f"pb{uuid.uuid4().hex[:6]}", "INSTANCE_ID": "pubbench",
           "LOG_FORMAT": "json"}
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
           "--port", str(port), "--ws", procs.WS_ALIASES.get(args.ws, args.ws), "--no-access-log", "--log-level", "warning"]
    cwd = Path(args.app_cwd).resolve() if args.app_cwd else procs.REPO_ROOT
    proc = procs.spawn("app-pubbench", "app", cmd, port, root / "app.log", env=env, cwd=cwd)
    probes.wait_http_ok(f"http://127.0.0.1:{port}/readyz", 30.0, watch=[proc])
    return proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ops.load.pubbench", description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("log", "instance", "both"), default="both")
    ap.add_argument("--appends", type=int, default=20000)
    ap.add_argument("--rooms", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=64, help="log mode: appending tasks")
    ap.add_argument("--sockets", type=int, default=10, help="instance mode: publisher sockets")
    ap.add_argument("--window", type=int, default=10, help="instance mode: frames in flight per socket")
    ap.add_argument("--body-bytes", type=int, default=100)
    ap.add_argument("--client-ids", action="store_true", help="give every publish a client_id")
    ap.add_argument("--ws", default="websockets-sansio")
    ap.add_argument("--app-cwd", help="run this checkout's streams/app instead of this one")
    ap.add_argument("--profile", help="instance mode: py-spy output (.svg, .json speedscope, .txt raw)")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="pubbench-") as tmp:
        root = Path(tmp)
        redis_proc = _start_redis(root)
        args.redis_pid = redis_proc.pid
        started: list[procs.Proc] = [redis_proc]
        try:
            if args.mode in ("log", "both"):
                results.append(asyncio.run(_log_run(redis_proc.port, args)))
            if args.mode in ("instance", "both"):
                app = _start_app(root, redis_proc.port, args)
                started.append(app)
                results.append(asyncio.run(_instance_run(redis_proc.port, app.pid, app.port, args)))
        finally:
            procs.stop_all(list(reversed(started)))
    for res in results:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
