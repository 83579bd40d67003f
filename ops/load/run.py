"""One load-test run: the subscriber workers, the publishing schedule, the
progress lines and the report (see :mod:`ops.load.loadtest` for the tool).

Publishers and the schedule run in this process on uvloop; subscribers in
``LoadConfig.procs`` worker processes (:mod:`ops.load.worker`). Process
usage of the servers, the generator itself and any watched pid (Redis) is
read from /proc at every step boundary and once a second; given
``redis_url``, Redis's ``INFO commandstats`` is reset before each step and
read after it.

Who publishes where: one lane per room (or per publisher socket, if there
are more sockets than rooms), lane j in room j % rooms on socket
j % publishers, and the schedule takes the lanes in turn, so messages go
round-robin over the rooms.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import redis

from ops.load import stats as st
from ops.load.client import Publisher
from ops.load.report import (
    PubRecord,
    StepPlan,
    ack_latency,
    headline,
    step_rows,
    timeline,
    verify,
)
from ops.load.worker import worker_main
from ops.load.traffic import Endpoint

CLOCK = "CLOCK_MONOTONIC (time.monotonic_ns), one clock for every generator process on this host"
# Above this share of one core the generator itself may be what limits the run.
SATURATED = 0.85


@dataclass
class LoadConfig:
    urls: list[str]
    subscribers: int = 100
    rooms: int = 1
    rooms_per_socket: int = 1  # > 1: each socket joins this many rooms (see members())
    publishers: int = 1  # publishing sockets; there is one lane per room
    steps: list[float] = field(default_factory=lambda: [100.0])  # messages/s, all publishers
    step_seconds: float = 10.0
    ramp_seconds: float = 0.0
    procs: int = 1
    client: str = "picows"
    concurrency: int = 200
    connect_timeout: float = 60.0
    pad: int = 0
    token: str | None = None
    server_pids: list[int] = field(default_factory=list)
    watch_pids: list[int] = field(default_factory=list)  # e.g. Redis: CPU reported separately
    redis_url: str | None = None  # INFO commandstats per step (CONFIG RESETSTAT before each)
    idle_seconds: float = 0.0  # CPU of everything measured with all joined, nothing published
    warm_up: bool = False  # one message per lane first, so no step pays for rooms' first entries
    cpus: list[int] | None = None  # pin the generator to these cores
    stop_on_fail: bool = False
    min_delivered: float = 0.999
    max_p99_ms: float = 100.0
    abort_p99_ms: float = 2000.0  # with stop_on_fail: a step this bad ends the stepping
    drain_seconds: float = 15.0
    out: str | None = None
    chart: bool = True
    label: str = ""
    quiet: bool = False
    # Room and user names are lt-<run_id>-...; a caller that must know where
    # the rooms land (the cluster benchmark spreads them evenly over the
    # shards' slots) picks it. Default: a random one per run.
    run_id: str | None = None

    @property
    def criteria(self) -> dict[str, float]:
        return {"min_delivered": self.min_delivered, "max_p99_ms": self.max_p99_ms}


class Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


def room_name(run: str, r: int) -> str:
    return f"lt-{run}-r{r}"


def members(cfg: LoadConfig, run: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Every subscriber socket: (user name, rooms it joins, URL).

    One room per socket: socket i joins room i % rooms, and member k of a
    room connects to URL k % len(urls), so every room has members on every
    instance (as behind a round-robin balancer: each instance handles each
    message). Several rooms per socket: each socket joins
    ``rooms_per_socket`` distinct rooms drawn at random with a fixed seed
    (each room gets about subscribers x rooms_per_socket / rooms members),
    socket i on URL i % len(urls).
    """
    n = len(cfg.urls)
    if cfg.rooms_per_socket <= 1:
        return [(f"lt-{run}-s{i}", (room_name(run, i % cfg.rooms),), cfg.urls[(i // cfg.rooms) % n])
                for i in range(cfg.subscribers)]
    rng = random.Random(1)
    k = min(cfg.rooms_per_socket, cfg.rooms)
    return [(f"lt-{run}-s{i}", tuple(room_name(run, r) for r in sorted(rng.sample(range(cfg.rooms), k))),
             cfg.urls[i % n]) for i in range(cfg.subscribers)]


def room_members(plan: list[tuple[str, tuple[str, ...], str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, rooms, _ in plan:
        for r in rooms:
            out[r] = out.get(r, 0) + 1
    return out


class RedisStats:
    """``INFO commandstats`` over one step: reset before, read after."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5.0)

    def reset(self) -> None:
        self.client.config_resetstat()

    def read(self) -> dict[str, dict[str, float]]:
        info = self.client.info("commandstats")
        return {k.removeprefix("cmdstat_"): {"calls": v["calls"], "usec": v["usec"],
                                             "usec_per_call": v["usec_per_call"]}
                for k, v in info.items() if v.get("calls")}

    def close(self) -> None:
        self.client.close()


# --- workers ------------------------------------------------------------------------


class Workers:
    """The subscriber processes and their pipes."""

    def __init__(self, cfg: LoadConfig, plan: list[tuple[str, tuple[str, ...], str]]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        self.pids: list[int] = []
        self.ticks: list[dict[str, Any]] = []
        self.finals: list[dict[str, Any] | None] = []
        self.connecting: list[tuple[int, int]] = []
        self.ready: list[tuple[Any, ...] | None] = []
        per: list[list[tuple[str, tuple[str, ...], str]]] = [[] for _ in range(cfg.procs)]
        for i, sub in enumerate(plan):
            per[i % cfg.procs].append(sub)
        for subs in per:
            parent, child = ctx.Pipe()
            spec = {"urls": cfg.urls, "token": cfg.token, "subs": subs, "client": cfg.client,
                    "concurrency": cfg.concurrency, "connect_timeout": cfg.connect_timeout}
            proc = ctx.Process(target=worker_main, args=(child, spec), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
            self.ticks.append({})
            self.finals.append(None)
            self.connecting.append((0, 0))
            self.ready.append(None)

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """One reader thread per pipe (blocking reads; the event loop may make
        a watched fd non-blocking, which breaks reading large messages)."""
        for i, pipe in enumerate(self.pipes):
            threading.Thread(target=self._read, args=(loop, i, pipe), daemon=True).start()

    def _read(self, loop: asyncio.AbstractEventLoop, i: int, pipe: Any) -> None:
        while True:
            try:
                msg = pipe.recv()
            except (EOFError, OSError):
                return
            try:
                loop.call_soon_threadsafe(self._on_message, i, msg)
            except RuntimeError:  # the loop is closed
                return
            if msg[0] == "final":
                return

    def _on_message(self, i: int, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "connecting":
            self.connecting[i] = (msg[1], msg[2])
        elif kind == "ready":
            self.ready[i] = msg
            self.pids.append(msg[4])
        elif kind == "tick":
            self.ticks[i] = msg[1]
        elif kind == "final":
            self.finals[i] = msg[1]

    def send(self, msg: tuple[Any, ...]) -> None:
        for pipe in self.pipes:
            pipe.send(msg)

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def delivered(self) -> int:
        return sum(t.get("delivered", 0) for t in self.ticks)

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()  # our own child, by its Process handle
                proc.join(timeout=5)


async def _until(pred: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(interval)
    return bool(pred())


# --- the run ----------------------------------------------------------------------------


class Run:
    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.id = cfg.run_id or uuid.uuid4().hex[:6]
        self.say = Progress(cfg.quiet).say
        self.plans = [StepPlan(i, r, cfg.step_seconds) for i, r in enumerate(cfg.steps)]
        self.usage: dict[int, dict[str, Any]] = {}
        self.cpu_per_s: dict[int, dict[str, float]] = {}
        self.published_per_s: dict[int, int] = {}
        self.stopped_early: str | None = None
        self.windows: dict[int, tuple[float, float]] = {}  # step -> seconds since t0
        self.pubs: list[Publisher] = []  # the lanes
        self.plan = members(cfg, self.id)
        self.room_members = room_members(self.plan)
        self.redis = RedisStats(cfg.redis_url) if cfg.redis_url else None
        self.idle: dict[str, float] | None = None

    def _pids(self) -> dict[str, list[int]]:
        return {"server": self.cfg.server_pids, "generator": [os.getpid(), *self.workers.pids],
                "watched": self.cfg.watch_pids}

    def _read(self) -> dict[str, dict[int, st.Usage | None]]:
        return {k: st.read_all(v) for k, v in self._pids().items()}

    @staticmethod
    def _cpu(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        return {f"{k}_cpu_s": round(st.cpu_between(before[k], after[k]), 3) for k in after}

    async def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.loadavg_start = os.getloadavg()
        rss_before = st.read_all(cfg.server_pids)
        self.workers = Workers(cfg, self.plan)
        self.workers.listen(loop)
        try:
            joined = await self._connect()
            rss_joined = st.read_all(cfg.server_pids)
            await self._connect_publishers()
            if cfg.warm_up:
                await self._warm_up()
            if cfg.idle_seconds > 0:
                await self._measure_idle()
            t0 = time.monotonic_ns()
            self.workers.send(("go", t0))
            begin = self._read()
            wall0 = time.monotonic()
            await self._schedule(t0)
            await self._drain()
            end = self._read()
            wall = time.monotonic() - wall0
            self.workers.send(("finish",))
            await _until(lambda: all(f is not None for f in self.workers.finals), 60)
        finally:
            for p in self.pubs:
                p.close()
            self.workers.stop()
            if self.redis is not None:
                self.redis.close()
        finals = [f for f in self.workers.finals if f is not None]
        if len(finals) != len(self.workers.finals):
            codes = [p.exitcode for p in self.workers.procs]
            raise RuntimeError(f"a subscriber worker did not report (exit codes {codes})")
        return self._report(started_at, finals, joined, rss_before, rss_joined, begin, end, wall)

    async def _connect(self) -> int:
        cfg, w = self.cfg, self.workers
        self.say(f"connecting {cfg.subscribers} subscribers over {len(cfg.urls)} URL(s) "
                 f"in {cfg.procs} process(es), client {cfg.client}")
        deadline = time.monotonic() + cfg.connect_timeout + 30
        last = 0.0
        while not all(r is not None for r in w.ready):
            if time.monotonic() > deadline or not w.alive():
                raise RuntimeError("subscriber workers did not get ready")
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                ok = sum(c[0] for c in w.connecting)
                bad = sum(c[1] for c in w.connecting)
                self.say(f"  joined {ok}/{cfg.subscribers}, failed {bad}")
            await asyncio.sleep(0.1)
        joined = sum(r[1] for r in w.ready if r)
        failed = sum(r[3] for r in w.ready if r)
        self.say(f"  joined {joined}/{cfg.subscribers}, failed {failed}")
        self.open_errors = [e for r in w.ready if r for e in r[2]]
        return joined

    async def _connect_publishers(self) -> None:
        cfg = self.cfg
        for j in range(max(cfg.rooms, cfg.publishers)):
            ep = Endpoint(cfg.urls[j % len(cfg.urls)], cfg.token)
            pub = Publisher(j, room_name(self.id, j % cfg.rooms), ep, pad=cfg.pad)
            if j < cfg.publishers:
                await pub.connect(cfg.client)
            else:
                pub.share(self.pubs[j % cfg.publishers])
            self.pubs.append(pub)

    async def _warm_up(self) -> None:
        """One message per lane (step -1: verified like any other, not
        timed), waited for: a room's first entry creates its stream and
        epoch, and every instance reads the room once on its first
        notification; a chat room has history, so none of that belongs in a
        step."""
        for p in self.pubs:
            p.publish(-1)
            await asyncio.sleep(0)
        if not await _until(lambda: all(_pending(p) == 0 for p in self.pubs), 60.0):
            raise RuntimeError("warm-up publishes were not confirmed")
        # The deliveries (the workers report counts only from go on).
        await asyncio.sleep(min(2.0, 0.3 + len(self.pubs) / 500))
        self.say(f"warmed up {len(self.pubs)} rooms")

    async def _measure_idle(self) -> None:
        """CPU with every socket joined and nothing published (presence
        refreshes, heartbeats): the floor under the per-message figures."""
        before = self._read()
        t = time.monotonic()
        await asyncio.sleep(self.cfg.idle_seconds)
        wall = time.monotonic() - t
        cpu = self._cpu(before, self._read())
        self.idle = {k.replace("_cpu_s", "_cpu_util"): round(v / wall, 4) for k, v in cpu.items()}
        self.say(f"idle for {wall:.1f}s: " + ", ".join(f"{k} {v:.1%}" for k, v in self.idle.items()))

    def _due(self, plan: StepPlan, t: float) -> float:
        """Messages due ``t`` seconds into a step (the first one may ramp up)."""
        ramp = self.cfg.ramp_seconds if plan.index == 0 else 0.0
        if ramp > 0 and t < ramp:
            return plan.rate * t * t / (2 * ramp)
        if ramp > 0:
            return plan.rate * (t - ramp / 2)
        return plan.rate * t

    async def _schedule(self, t0: int) -> None:
        """Publish step after step at their rates; one progress line a second."""
        cfg = self.cfg
        next_line = 1
        rr = 0
        sent_total = 0
        for plan in self.plans:
            if self.redis is not None:
                self.redis.reset()
            before = self._read()
            start = time.monotonic()
            seconds = plan.seconds + (cfg.ramp_seconds if plan.index == 0 else 0.0)
            sent = 0
            judged = False
            while True:
                now = time.monotonic()
                t = now - start
                if t >= seconds:
                    break
                due = int(self._due(plan, t))
                burst = 0
                while sent < due and burst < 1000:
                    self.pubs[rr % len(self.pubs)].publish(plan.index)
                    rr += 1
                    sent += 1
                    burst += 1
                sec = (time.monotonic_ns() - t0) // 1_000_000_000
                self.published_per_s[sec] = self.published_per_s.get(sec, 0) + burst
                sent_total += burst
                elapsed = (time.monotonic_ns() - t0) / 1e9
                if elapsed >= next_line + 0.1:  # the workers report 20 ms after each second
                    self._line(next_line, plan, sent_total)
                    next_line += 1
                if not judged and plan.index > 0 and t >= 1.5 and cfg.stop_on_fail:
                    judged = True
                    if self._clearly_failing(plan.index - 1):
                        self.stopped_early = f"step {plan.index - 1} failing; stopped stepping"
                        break
                if any(p.closed for p in self.pubs):
                    raise RuntimeError("a publisher's connection closed")
                gap = (int(self._due(plan, t)) + 1 - self._due(plan, t)) / max(plan.rate, 1e-9)
                await asyncio.sleep(min(0.02, max(0.0005, gap)))
            after = self._read()
            self.usage[plan.index] = {"wall_s": time.monotonic() - start, **self._cpu(before, after)}
            if self.redis is not None:
                self.usage[plan.index]["redis_commands"] = self.redis.read()
            self.windows[plan.index] = ((start * 1e9 - t0) / 1e9, (time.monotonic_ns() - t0) / 1e9)
            if self.stopped_early:
                break

    def _clearly_failing(self, k: int) -> bool:
        ticks = self.workers.ticks
        hist = st.merged(t.get("step_hist", {}).get(k, {}) for t in ticks)
        p99 = st.percentile(hist, 99.0)
        return p99 is not None and p99 > self.cfg.abort_p99_ms

    def _line(self, sec: int, plan: StepPlan, sent_total: int) -> None:
        ticks = self.workers.ticks
        hist = st.merged(t.get("sec_hist", {}) for t in ticks if t.get("sec") == sec - 1)
        now = self._read()
        prev = getattr(self, "_prev_read", None)
        self._prev_read = now
        if prev is not None:
            cpu = self._cpu(prev, now)
            self.cpu_per_s[sec - 1] = {k.replace("_cpu_s", "_cpu"): v for k, v in cpu.items()}
        cpu_txt = ""
        if prev is not None:
            c = self.cpu_per_s[sec - 1]
            cpu_txt = (f" cpu server {c.get('server_cpu', 0):.0%} gen {c.get('generator_cpu', 0):.0%}"
                       f" other {c.get('watched_cpu', 0):.0%}")
        p99 = st.percentile(hist, 99.0)
        confirmed = sum(p.confirmed for p in self.pubs)
        self.say(f"t={sec:4d}s step {plan.index + 1}/{len(self.plans)} rate {plan.rate:g}/s "
                 f"sent {sent_total} ok {confirmed} deliv/s {st.count(hist):,} "
                 f"p50 {fmt_ms(st.percentile(hist, 50.0))} p99 {fmt_ms(p99)}{cpu_txt}")

    async def _drain(self) -> None:
        """Wait for the publish answers, then for the deliveries to stop coming."""
        await _until(lambda: all(_pending(p) == 0 for p in self.pubs), 15.0)
        expected = sum(p.confirmed * self._room_subs(p.room) for p in self.pubs)
        deadline = time.monotonic() + self.cfg.drain_seconds
        last, still = -1, time.monotonic()
        while time.monotonic() < deadline:
            got = self.workers.delivered()
            if got >= expected:
                break
            if got != last:
                last, still = got, time.monotonic()
            elif time.monotonic() - still > 3.0:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.1)  # one more tick from every worker

    def _room_subs(self, room: str) -> int:
        return self.room_members.get(room, 0)

    def _report(self, started_at: str, finals: list[dict[str, Any]], joined: int,
                rss_before: dict[int, st.Usage | None], rss_joined: dict[int, st.Usage | None],
                begin: dict[str, Any], end: dict[str, Any], wall: float) -> dict[str, Any]:
        cfg = self.cfg
        pubs = [PubRecord(p.index, p.room, p.sent_ns, p.steps, p.ids, p.ack_ns, p.errors)
                for p in self.pubs]
        warm = [StepPlan(-1, 0.0, 0.0)] if cfg.warm_up else []  # verified too
        checked = verify(pubs, finals, [*warm, *self.plans])
        rows = step_rows(pubs, finals, self.plans, checked, self.usage, cfg.criteria, self.windows)
        cpu = self._cpu(begin, end)
        all_hist = st.merged(h for f in finals for h in f["step_hist"].values())
        max_us = max((m for f in finals for m in f["step_max"].values()), default=None)
        gen_cpu = cpu["generator_cpu_s"]
        per_proc = {str(pid): round(st.cpu_between({pid: begin["generator"].get(pid)},
                                                   {pid: end["generator"].get(pid)}) / wall, 3)
                    for pid in end["generator"]} if wall else {}
        servers = []
        for pid in cfg.server_pids:
            b, j, e = rss_before.get(pid), rss_joined.get(pid), end["server"].get(pid)
            servers.append({
                "pid": pid,
                "cpu_s": round(e.cpu_s - b.cpu_s, 3) if (e and b) else None,
                "rss_kib_before": b.rss_kib if b else None,
                "rss_kib_joined": j.rss_kib if j else None,
                "rss_kib_end": e.rss_kib if e else None,
            })
        rss_delta = sum((s["rss_kib_joined"] or 0) - (s["rss_kib_before"] or 0) for s in servers)
        totals = {k: checked[k] for k in checked if k != "by_step"}
        totals["delivered_ratio"] = st.ratio(checked["delivered"], checked["expected"])
        totals["latency_ms"] = st.summary(all_hist, max_us)
        ok = (checked["lost"] == 0 and checked["duplicates"] == 0 and checked["disorder"] == 0
              and checked["id_mismatch"] == 0 and checked["subscribers_closed"] == 0)
        instances: dict[str, int] = {}  # sockets per instance
        for f in finals:
            for sock, inst in {s["socket"]: s["instance"] for s in f["subs"]}.items():
                instances[str(inst)] = instances.get(str(inst), 0) + 1
        report = {
            "tool": "ops.load.loadtest",
            "label": cfg.label,
            "started_at": started_at,
            "config": {k: v for k, v in asdict(cfg).items() if k != "token"},
            "clock": CLOCK,
            # The machine may be shared: other load shows here and in the latencies.
            "host": {"cpus": os.cpu_count(), "loadavg_start": self.loadavg_start,
                     "loadavg_end": os.getloadavg(),
                     "generator_affinity": sorted(os.sched_getaffinity(0))},
            "ok": ok,
            "shape": {"sockets": cfg.subscribers, "rooms": cfg.rooms,
                      "rooms_per_socket": cfg.rooms_per_socket,
                      "memberships": sum(self.room_members.values()),
                      "members_per_room_min": min(self.room_members.values(), default=0),
                      "members_per_room_max": max(self.room_members.values(), default=0),
                      "publisher_sockets": cfg.publishers, "lanes": len(self.pubs)},
            "idle_cpu_util": self.idle,
            "subscribers": {"wanted": cfg.subscribers, "joined": joined,
                            "failed": cfg.subscribers - joined,
                            "errors": self.open_errors[:20], "by_instance": instances},
            "publishers": [{"index": p.index, "room": p.room, "sent": len(p.sent_ns),
                            "confirmed": sum(1 for i in p.ids if i is not None),
                            "errors": p.errors} for p in pubs],
            "publish_ack_latency_ms": ack_latency(pubs),
            "totals": totals,
            "steps": rows,
            "stopped_early": self.stopped_early,
            "headline": headline(rows),
            "criteria": cfg.criteria,
            "run_seconds": round(wall, 3),
            "servers": servers,
            "server_cpu_s": cpu["server_cpu_s"] if cfg.server_pids else None,
            "deliveries_per_server_cpu_s": (round(checked["delivered"] / cpu["server_cpu_s"])
                                            if cfg.server_pids and cpu["server_cpu_s"] else None),
            "server_kib_per_connection": (round(rss_delta / joined, 2)
                                          if cfg.server_pids and joined else None),
            "watched_cpu_s": cpu["watched_cpu_s"] if cfg.watch_pids else None,
            "generator": {
                "pids": self._pids()["generator"],
                "client": cfg.client,
                "procs": cfg.procs,
                "cpu_s": gen_cpu,
                "utilization": round(gen_cpu / wall, 3) if wall else None,
                "cpu_us_per_delivery": (round(gen_cpu * 1e6 / checked["delivered"], 2)
                                        if checked["delivered"] else None),
                "per_process_utilization": per_proc,
                "saturated": bool(wall and (gen_cpu / wall > SATURATED * _cores(cfg)
                                            or max(per_proc.values(), default=0) > SATURATED)),
            },
            "timeline": timeline(finals, self.published_per_s, self.cpu_per_s),
        }
        return report


def _pending(p: Publisher) -> int:
    return sum(1 for seq, i in enumerate(p.ids) if i is None and p.attempts.get(seq) != -1)


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}ms" if v < 1000 else f"{v / 1000:.2f}s")


def _cores(cfg: LoadConfig) -> int:
    """Cores the generator can use: one per process, at most its pinned set."""
    available = len(cfg.cpus) if cfg.cpus else (os.cpu_count() or 1)
    return min(available, cfg.procs + 1)
