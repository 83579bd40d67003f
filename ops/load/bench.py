"""``python -m ops.load.bench``: the standard benchmark scenario (``make bench``).

On a machine with two or more cores: the two instances share core 0
(``taskset -c 0``); Redis and the generator share core 1. For each uvicorn
WebSocket implementation asked for (``--ws``), on fresh instances each time:

1. ``fixed``: 1,000 subscribers in one room split over the two instances,
   one publisher at 50 messages/s = 50,000 deliveries/s: deliveries per
   server CPU-second and the latency at that load.
2. ``steps``: the same, the publisher stepping its rate up; the headline is
   the highest step with >= 99.9 % delivered and p99 <= 100 ms.
3. ``idle``: 10,000 idle connections (each joined to a quiet room): server
   RSS per connection.
4. ``replay``: 50 clients join a room, leave, miss 10,000 messages, then
   all reconnect at once with ``since``: the time until every one of them
   has received all 10,000 (verified: count, order, last id) and ``joined``.

The shapes chat products have, where the cost is per published message
rather than per delivery (``ops.load.bench_rooms``; not in the default run):

5. ``small-rooms``: 200 rooms of 10 (2,000 sockets), two publisher sockets,
   ~100-byte bodies round-robin over the rooms, the rate stepped up.
6. ``many-rooms``: the same with 1,000 rooms of 10 (10,000 sockets).
7. ``shared-rooms``: 2,000 sockets each in 20 of 400 rooms (~100 members).

Each reports messages/s and deliveries/s at the best passing step, server
and Redis CPU per published message, Redis's ``INFO commandstats`` per
call and the generator's own share of its core.

Results go under ``bench/results/<time>/``: one JSON (+ PNG) per load run,
``summary.json`` and ``summary.md`` with the figures side by side, as
ratios to the targets and to the first implementation measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ops.load import bench_rooms, loadtest
from ops.load import stats as st
from ops.local import probes, procs
from ops.load.client import (
    Publisher,
    ReplayState,
    SubState,
    Tally,
    open_many,
    raise_nofile,
    replay_join,
    use_uvloop,
)
from ops.load.traffic import Endpoint

# "lean": streamgate's own protocol class for /ws (procs.WS_ALIASES); the
# others are uvicorn's, with /ws through the ASGI app. BARE is no streamgate
# at all: the yardstick of ops/load/bare.py, asked for by name only.
WS_IMPLS = ("lean", "websockets-sansio", "websockets", "wsproto")
BARE = "bare"
NOT_FOR_BARE = ("replay",)  # it keeps no history to replay
TARGETS = {
    "deliveries_per_server_cpu_s": BARE,  # at least the bare server's, at 50k/s and 100k/s
    "p99_ms_at_100k": 50.0,  # at most
    "kib_per_idle_connection": 16.0,  # at most
    "replay_seconds": 0.3,  # at most
}
STEP_RATES = (10, 25, 50, 75, 100, 150, 200, 300, 400)
DEFAULT_PHASES = ("fixed", "steps", "idle", "replay", *bench_rooms.PHASES)


@dataclass
class Scenario:
    ws: list[str]
    phases: list[str]
    subscribers: int = 1000
    fixed_rate: float = 50.0
    fixed_seconds: float = 15.0
    step_rates: tuple[float, ...] = STEP_RATES
    step_seconds: float = 8.0
    idle: int = 10_000
    missed: int = 10_000
    replayers: int = 50
    out: Path = loadtest.RESULTS_DIR
    app_cwd: Path = procs.REPO_ROOT
    client: str = "picows"
    env: tuple[tuple[str, str], ...] = ()
    rooms: bench_rooms.RoomsConfig = bench_rooms.RoomsConfig()


def _cores() -> tuple[list[int] | None, list[int] | None]:
    """(server cores, generator + Redis cores), or Nones on a one-core machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return [cpus[0]], cpus[1:2]


def _pinned(cmd: list[str], cores: list[int] | None) -> list[str]:
    if not cores:
        return cmd
    return ["taskset", "-c", ",".join(map(str, cores)), *cmd]


class Stack:
    """A private Redis and two instances, all on loopback, stopped by pid."""

    def __init__(self, root: Path, server_cores: list[int] | None, other_cores: list[int] | None,
                 app_cwd: Path, env: dict[str, str]) -> None:
        self.root = root
        self.server_cores = server_cores
        self.other_cores = other_cores
        self.app_cwd = app_cwd
        self.env = env
        self.redis: procs.Proc | None = None
        self.apps: list[procs.Proc] = []

    def start_redis(self) -> None:
        port = procs.free_port()
        d = self.root / "redis"
        d.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(d), "--daemonize", "no", "--logfile", ""]
        self.redis = procs.spawn(f"redis-{port}", "redis", _pinned(cmd, self.other_cores), port,
                                 d / "redis.log")
        probes.wait_redis(port, 10.0, self.redis)

    def start_apps(self, ws: str, n: int = 2) -> None:
        assert self.redis is not None
        if ws == BARE:
            self._start_bare()
            return
        ports = procs.free_ports(n)
        tag = uuid.uuid4().hex[:6]
        for i, port in enumerate(ports):
            env = {**os.environ, "AUTH_MODE": "none", "ALLOWED_ORIGINS": "*",
                   "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
                   # One publisher drives the whole scenario: no per-socket rate limit.
                   "PUBLISH_RATE": "1000000", "PUBLISH_BURST": "1000000",
                   "KEY_PREFIX": f"bench-{tag}", "INSTANCE_ID": f"bench-{ws}-{i}",
                   "MAX_CONNECTIONS": "20000", "LOG_FORMAT": "json", **self.env}
            cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                   "--port", str(port), "--ws", procs.WS_ALIASES.get(ws, ws), "--no-access-log", "--log-level", "warning"]
            self.apps.append(procs.spawn(f"app-{ws}-{i}", "app", _pinned(cmd, self.server_cores),
                                         port, self.root / f"app-{ws}-{i}.log", env=env,
                                         cwd=self.app_cwd))
        for p in self.apps:
            probes.wait_http_ok(f"http://127.0.0.1:{p.port}/readyz", 30.0, watch=[p])

    def _start_bare(self) -> None:
        """One bare websockets process (it holds every room), from this checkout."""
        port = procs.free_port()
        cmd = [sys.executable, "-m", "ops.load.bare", "--port", str(port)]
        self.apps.append(procs.spawn("app-bare", "app", _pinned(cmd, self.server_cores), port,
                                     self.root / "app-bare.log", cwd=procs.REPO_ROOT))
        probes.wait_http_ok(f"http://127.0.0.1:{port}/readyz", 30.0, watch=self.apps)

    @property
    def redis_pid(self) -> int | None:
        return self.redis.pid if self.redis else None

    @property
    def redis_url(self) -> str | None:
        return f"redis://127.0.0.1:{self.redis.port}/0" if self.redis else None

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p.port}" for p in self.apps]

    @property
    def app_pids(self) -> list[int]:
        return [p.pid for p in self.apps]

    def stop_apps(self) -> None:
        procs.stop_all(self.apps, timeout=15.0)
        self.apps = []

    def stop(self) -> None:
        self.stop_apps()
        if self.redis is not None:
            procs.stop_proc(self.redis)
            self.redis = None


# --- phases ----------------------------------------------------------------------------


def fanout(stack: Stack, sc: Scenario, ws: str, kind: str, other_cores: list[int] | None,
           out_dir: Path) -> dict[str, Any]:
    steps = [sc.fixed_rate] if kind == "fixed" else list(sc.step_rates)
    cfg = loadtest.LoadConfig(
        urls=stack.urls, subscribers=sc.subscribers, rooms=1, publishers=1, steps=steps,
        step_seconds=sc.fixed_seconds if kind == "fixed" else sc.step_seconds,
        ramp_seconds=2.0 if kind == "fixed" else 0.0, procs=1, client=sc.client,
        server_pids=stack.app_pids, watch_pids=[stack.redis.pid] if stack.redis else [],
        redis_url=stack.redis_url, cpus=other_cores, stop_on_fail=kind == "steps", out=str(out_dir / f"{ws}-{kind}.json"),
        label=f"{ws}: {kind} ({sc.subscribers} subscribers, 1 room, 2 instances on one core)",
    )
    report = loadtest.run(cfg)
    for line in loadtest.summary_lines(report):
        print("  " + line, flush=True)
    return report


async def _idle(stack: Stack, n: int, client: str) -> dict[str, Any]:
    tally = Tally()
    eps = {u: Endpoint(u) for u in stack.urls}
    room = f"idle-{uuid.uuid4().hex[:6]}"
    warm = [SubState(f"warm-{i}", room, stack.urls[i % len(stack.urls)]) for i in range(200)]
    conns, _ = await open_many(tally, warm, eps, client=client, concurrency=100)
    for c in conns:
        c.close()
    await asyncio.sleep(2.0)
    before = st.read_all(stack.app_pids)
    states = [SubState(f"idle-{i}", room, stack.urls[i % len(stack.urls)]) for i in range(n)]
    t0 = time.monotonic()
    last = [0.0]

    def progress(ok: int, bad: int) -> None:
        if time.monotonic() - last[0] > 2.0:
            last[0] = time.monotonic()
            print(f"    idle: {ok} joined, {bad} failed", flush=True)

    conns, errors = await open_many(tally, states, eps, client=client, concurrency=200,
                                    timeout=120.0, on_progress=progress)
    connect_s = time.monotonic() - t0
    await asyncio.sleep(3.0)  # let presence writes and buffers settle
    after = st.read_all(stack.app_pids)
    servers = []
    for pid, url in zip(stack.app_pids, stack.urls):
        b, a = before[pid], after[pid]
        here = sum(1 for s in states if s.join_id is not None and s.url == url)
        servers.append({"pid": pid, "connections": here,
                        "rss_kib_before": b.rss_kib if b else None,
                        "rss_kib_after": a.rss_kib if a else None,
                        "kib_per_connection": (round((a.rss_kib - b.rss_kib) / here, 2)
                                               if a and b and here else None),
                        "cpu_s_connecting": round(a.cpu_s - b.cpu_s, 3) if a and b else None})
    for c in conns:
        c.close()
    total_delta = sum((s["rss_kib_after"] or 0) - (s["rss_kib_before"] or 0) for s in servers)
    return {"connections": len(conns), "failed": len(errors), "errors": errors[:10],
            "connect_seconds": round(connect_s, 2),
            "kib_per_connection": round(total_delta / len(conns), 2) if conns else None,
            "servers": servers}


async def _replay(stack: Stack, missed: int, clients: int) -> dict[str, Any]:
    room = f"replay-{uuid.uuid4().hex[:6]}"
    eps = [Endpoint(u) for u in stack.urls]
    states = [ReplayState(f"rp-{i}", room, stack.urls[i % len(stack.urls)]) for i in range(clients)]
    first = await asyncio.gather(*(replay_join(s, eps[i % len(eps)], 30.0) for i, s in enumerate(states)))
    for t in first:
        t.disconnect(graceful=False)
    pub = Publisher(0, room, eps[0])
    await pub.connect()
    deadline = time.monotonic() + 120
    while len(pub.sent_ns) < missed and time.monotonic() < deadline:
        for _ in range(min(500, missed - len(pub.sent_ns))):
            pub.publish(0)
        while pub.confirmed < len(pub.sent_ns) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
    pub.close()
    last = pub.ids[-1] if pub.ids else None
    if pub.confirmed != missed:
        raise RuntimeError(f"replay setup: {pub.confirmed}/{missed} publishes confirmed")
    for s in states:
        s.since = s.joined_id or "0"
        s.count, s.last_ms, s.last_seq, s.done = 0, -1, -1, None
    before = st.read_all(stack.app_pids)
    gen_before = st.read_usage(os.getpid())
    t0 = time.monotonic_ns()
    transports = await asyncio.gather(*(replay_join(s, eps[i % len(eps)], 120.0)
                                        for i, s in enumerate(states)))
    t_all = (max(s.joined_at for s in states) - t0) / 1e9
    after = st.read_all(stack.app_pids)
    gen_after = st.read_usage(os.getpid())
    gen_cpu = (gen_after.cpu_s - gen_before.cpu_s) if gen_after and gen_before else None
    for t in transports:
        t.disconnect(graceful=False)
    per = sorted((s.joined_at - t0) / 1e9 for s in states)
    bad = [f"{s.name}: {s.count} messages, last {s.last_id}, disorder {s.disorder}, "
           f"recovered {s.recovered}" for s in states
           if s.count != missed or s.last_id != last or s.disorder or s.recovered is not True]
    cpu = st.cpu_between(before, after)
    return {"clients": clients, "missed": missed, "seconds": round(t_all, 3),
            "client_seconds_p50": round(per[len(per) // 2], 3), "client_seconds_max": round(per[-1], 3),
            "messages_per_s": round(clients * missed / t_all) if t_all else None,
            "server_cpu_s": round(cpu, 3),
            "deliveries_per_server_cpu_s": round(clients * missed / cpu) if cpu else None,
            # The 50 clients share one generator process: near 1.0 it, not the
            # servers, set the time.
            "generator_cpu_util": round(gen_cpu / t_all, 3) if gen_cpu is not None and t_all else None,
            "verified": not bad, "problems": bad[:10]}


def idle_phase(stack: Stack, n: int, client: str) -> dict[str, Any]:
    soft = raise_nofile(n + 2000)
    if soft < n + 500:
        print(f"    open-file limit {soft}: idle connections reduced", flush=True)
        n = max(100, soft - 500)
    use_uvloop()
    return asyncio.run(_idle(stack, n, client))


def replay_phase(stack: Stack, missed: int, clients: int) -> dict[str, Any]:
    use_uvloop()
    return asyncio.run(_replay(stack, missed, clients))


# --- the scenario --------------------------------------------------------------------------


def run(sc: Scenario) -> dict[str, Any]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = sc.out / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    server_cores, other_cores = _cores()
    raise_nofile(max(sc.idle, sc.rooms.most_sockets()) + 2000)
    if other_cores:
        os.sched_setaffinity(0, set(other_cores))
    print(f"bench: results in {out_dir}; servers on cores {server_cores}, Redis and generator "
          f"on {other_cores}; load average {os.getloadavg()}", flush=True)
    stack = Stack(out_dir / "procs", server_cores, other_cores, sc.app_cwd, dict(sc.env))
    results: dict[str, Any] = {"started": stamp, "host": {"cpus": os.cpu_count(),
                               "server_cores": server_cores, "other_cores": other_cores,
                               "loadavg_start": os.getloadavg()},
                               "scenario": {k: (str(v) if isinstance(v, Path) else
                                                asdict(v) if is_dataclass(v) else v)
                                            for k, v in sc.__dict__.items()},
                               "targets": TARGETS, "by_ws": {}}
    try:
        stack.start_redis()
        for ws in sc.ws:
            results["by_ws"][ws] = _one_impl(stack, sc, ws, other_cores, out_dir)
    finally:
        stack.stop()
    results["host"]["loadavg_end"] = os.getloadavg()
    results["comparison"] = compare(results["by_ws"])
    (out_dir / "summary.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = summary_table(results) + bench_rooms.summary_table(results)
    (out_dir / "summary.md").write_text(md)
    print(md, flush=True)
    return results


def _one_impl(stack: Stack, sc: Scenario, ws: str, other_cores: list[int] | None,
              out_dir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for phase in sc.phases:
        if ws == BARE and phase in NOT_FOR_BARE:
            continue
        print(f"== {ws}: {phase}", flush=True)
        try:
            stack.start_apps(ws)
            if phase in ("fixed", "steps"):
                r = fanout(stack, sc, ws, phase, other_cores, out_dir)
                res[phase] = _fanout_figures(r, phase)
            elif phase == "idle":
                res[phase] = idle_phase(stack, sc.idle, sc.client)
                print(f"  idle: {res[phase]['connections']} connections, "
                      f"{res[phase]['kib_per_connection']} KiB RSS each", flush=True)
            elif phase in bench_rooms.PHASES:
                r = bench_rooms.run_phase(stack, sc.rooms, phase, ws, sc.client, other_cores,
                                          out_dir)
                res[phase] = bench_rooms.figures(r)
            elif phase == "replay":
                res[phase] = replay_phase(stack, sc.missed, sc.replayers)
                r = res[phase]
                print(f"  replay: {sc.missed} missed messages to {sc.replayers} clients in "
                      f"{r['seconds']} s (verified: {r['verified']}), server CPU {r['server_cpu_s']} s, "
                      f"generator {r['generator_cpu_util']} of a core", flush=True)
        except Exception as exc:  # noqa: BLE001 - one phase must not discard the others' figures
            print(f"  {phase} failed: {exc!r}", flush=True)
            res[phase] = {"error": repr(exc)}
        finally:
            stack.stop_apps()
    return res


def failed_phases(results: dict[str, Any]) -> list[str]:
    """``ws: phase`` for each phase that ended in an error instead of figures."""
    return [f"{ws}: {phase}" for ws, res in results["by_ws"].items()
            for phase, r in res.items() if isinstance(r, dict) and "error" in r]


def _fanout_figures(r: dict[str, Any], phase: str) -> dict[str, Any]:
    rows = r["steps"]
    out: dict[str, Any] = {"file": r.get("files", {}).get("json"), "ok": r["ok"],
                           "lost": r["totals"]["lost"], "duplicates": r["totals"]["duplicates"],
                           "disorder": r["totals"]["disorder"],
                           "generator_utilization": r["generator"]["utilization"],
                           "generator_saturated": r["generator"]["saturated"],
                           "generator_cpu_us_per_delivery": r["generator"]["cpu_us_per_delivery"],
                           "loadavg": r["host"]["loadavg_end"]}
    if phase == "fixed" and rows:
        row = rows[0]
        out.update({"deliveries_per_s": row["deliveries_per_s"],
                    "deliveries_per_server_cpu_s": row["deliveries_per_server_cpu_s"],
                    "server_cpu_util": row["server_cpu_util"],
                    "latency_ms": row["latency_ms"], "delivered_ratio": row["delivered_ratio"],
                    "per_message": bench_rooms.per_message(row, r)})
    else:
        out["headline"] = r["headline"]
        out["steps"] = [{"rate": x["rate"], "deliveries_per_s": x["deliveries_per_s"],
                         "p99_ms": x["latency_ms"]["p99"], "delivered_ratio": x["delivered_ratio"],
                         "deliveries_per_server_cpu_s": x["deliveries_per_server_cpu_s"],
                         "server_cpu_util": x["server_cpu_util"], "pass": x["pass"]} for x in rows]
    return out


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)  # type: ignore[assignment]
    return d


FIGURES = (
    ("deliveries per server CPU-s @50k/s", ("fixed", "deliveries_per_server_cpu_s"), "higher"),
    ("p99 ms @50k/s", ("fixed", "latency_ms", "p99"), "lower"),
    ("server CPU share @50k/s", ("fixed", "server_cpu_util"), "lower"),
    ("best passing step deliveries/s", ("steps", "headline", "deliveries_per_s"), "higher"),
    ("p99 ms at that step", ("steps", "headline", "p99_ms"), "lower"),
    ("deliveries per server CPU-s at that step", ("steps", "headline", "deliveries_per_server_cpu_s"),
     "higher"),
    ("KiB RSS per idle connection", ("idle", "kib_per_connection"), "lower"),
    ("replay 10k x 50 clients, s", ("replay", "seconds"), "lower"),
    ("replay deliveries per server CPU-s", ("replay", "deliveries_per_server_cpu_s"), "higher"),
)


def compare(by_ws: dict[str, Any]) -> dict[str, Any]:
    """Each figure of each implementation as a ratio to the first one measured."""
    if not by_ws:
        return {}
    base_name = next(iter(by_ws))
    base = by_ws[base_name]
    out: dict[str, Any] = {"baseline": base_name, "ratios": {}}
    for ws, res in by_ws.items():
        out["ratios"][ws] = {name: st.ratio(_get(res, *path), _get(base, *path))
                             for name, path, _ in FIGURES}
    return out


def summary_table(results: dict[str, Any]) -> str:
    by_ws = results["by_ws"]
    names = list(by_ws)
    lines = [f"# bench {results['started']}", "",
             f"load average at start {results['host']['loadavg_start']}, "
             f"at end {results['host']['loadavg_end']} (2 cores; other load skews latency)", "",
             "| figure | " + " | ".join(names) + " | target |",
             "| --- | " + " | ".join("---" for _ in names) + " | --- |"]
    targets = {"deliveries per server CPU-s @50k/s": f">= {BARE}", "p99 ms @50k/s": "<= 50",
               "best passing step deliveries/s": ">= 100,000",
               "p99 ms at that step": "<= 50 at 100k/s",
               "deliveries per server CPU-s at that step": f">= {BARE}",
               "KiB RSS per idle connection": "<= 16", "replay 10k x 50 clients, s": "<= 0.3"}
    ratios = results["comparison"].get("ratios", {})
    for name, path, _ in FIGURES:
        cells = []
        for ws in names:
            v = _get(by_ws[ws], *path)
            r = ratios.get(ws, {}).get(name)
            txt = "-" if v is None else (f"{v:,.0f}" if isinstance(v, (int, float)) and abs(v) >= 100
                                         else f"{v:.3g}")
            if r is not None and ws != names[0]:
                txt += f" (×{r:.2f})"
            cells.append(txt)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {targets.get(name, '')} |")
    lines.append("")
    for ws in names:
        f = by_ws[ws].get("fixed", {})
        s = by_ws[ws].get("steps", {})
        lines.append(f"- {ws}: fixed verified {f.get('ok')}, steps verified {s.get('ok')}, "
                     f"generator {f.get('generator_utilization')} of a core "
                     f"({f.get('generator_cpu_us_per_delivery')} µs/delivery), saturated "
                     f"{f.get('generator_saturated') or s.get('generator_saturated')}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> Scenario:
    ap = argparse.ArgumentParser(prog="python -m ops.load.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ws", default=f"lean,{BARE}",
                    help=f"comma list of uvicorn --ws implementations, or all ({','.join(WS_IMPLS)}); "
                         f"{BARE}: a bare websockets server without Redis, the yardstick")
    ap.add_argument("--phases", default=",".join(DEFAULT_PHASES))
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--fixed-rate", type=float, default=50.0)
    ap.add_argument("--fixed-seconds", type=float, default=15.0)
    ap.add_argument("--step-rates", default=",".join(map(str, STEP_RATES)))
    ap.add_argument("--step-seconds", type=float, default=8.0)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--missed", type=int, default=10_000)
    ap.add_argument("--replayers", type=int, default=50)
    ap.add_argument("--client", choices=("picows", "websockets"), default="picows")
    bench_rooms.add_args(ap)
    ap.add_argument("--app-cwd", default=str(procs.REPO_ROOT),
                    help="run the instances from this checkout (to measure a change)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the instances")
    ap.add_argument("--out", default=str(loadtest.RESULTS_DIR))
    a = ap.parse_args(argv)
    ws = list(WS_IMPLS) if a.ws == "all" else [w.strip() for w in a.ws.split(",") if w.strip()]
    return Scenario(
        ws=ws, phases=[p.strip() for p in a.phases.split(",") if p.strip()],
        subscribers=a.subscribers, fixed_rate=a.fixed_rate, fixed_seconds=a.fixed_seconds,
        step_rates=tuple(float(x) for x in a.step_rates.split(",")), step_seconds=a.step_seconds,
        idle=a.idle, missed=a.missed, replayers=a.replayers, client=a.client,
        app_cwd=Path(a.app_cwd), out=Path(a.out),
        env=tuple(tuple(e.split("=", 1)) for e in a.env),  # type: ignore[misc]
        rooms=bench_rooms.from_args(a),
    )


def main(argv: Sequence[str] | None = None) -> int:
    failed = failed_phases(run(parse_args(argv)))
    if failed:
        print("bench: phases that failed: " + ", ".join(failed), file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
