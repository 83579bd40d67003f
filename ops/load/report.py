"""Turn what the generator recorded into the load-test report (pure).

Inputs: the publishers' records (send time, step and confirmed id per seq)
and each subscriber worker's final tally (a bitmap of received seqs per
subscriber and publisher, latency histograms per step and per second).
Every number in the JSON result is computed here, so it can be tested on
synthetic records without starting anything.

Loss is counted against the confirmed messages only: a subscriber that
joined before publishing began must receive every message whose publish
was confirmed, once (bitmap), in stream order (counted by the worker), with
the same id the publisher was given (``id_mismatch``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ops.load import stats as st


@dataclass
class PubRecord:
    """One publisher's messages, indexed by seq."""

    index: int
    room: str
    sent_ns: list[int]
    steps: list[int]
    ids: list[str | None]
    ack_ns: list[int]
    errors: dict[str, int] = field(default_factory=dict)

    def confirmed_mask(self, lo: int = 0, hi: int | None = None) -> int:
        """Bit ``seq`` set for each confirmed seq in [lo, hi)."""
        hi = len(self.ids) if hi is None else hi
        bits = bytearray((hi >> 3) + 1)
        for seq in range(lo, hi):
            if self.ids[seq] is not None:
                bits[seq >> 3] |= 1 << (seq & 7)
        return int.from_bytes(bits, "little")

    def step_range(self, step: int) -> tuple[int, int]:
        """Seqs of one step: contiguous, since steps only move forward."""
        lo = next((i for i, k in enumerate(self.steps) if k == step), len(self.steps))
        hi = lo
        while hi < len(self.steps) and self.steps[hi] == step:
            hi += 1
        return lo, hi


@dataclass(frozen=True)
class StepPlan:
    index: int
    rate: float  # messages per second, all publishers together
    seconds: float


def step_usage(usage: Mapping[str, Any], step: int) -> dict[str, float]:
    return usage.get(step, {})  # type: ignore[no-any-return]


def verify(pubs: Sequence[PubRecord], workers: Sequence[Mapping[str, Any]],
           steps: Sequence[StepPlan]) -> dict[str, Any]:
    """Loss, duplicates, disorder and id integrity, overall and per step."""
    subs = [s for w in workers for s in w["subs"]]
    by_room: dict[str, list[PubRecord]] = {}
    for p in pubs:
        by_room.setdefault(p.room, []).append(p)
    masks = {p.index: p.confirmed_mask() for p in pubs}
    step_masks = {}
    for p in pubs:
        for plan in steps:
            lo, hi = p.step_range(plan.index)
            step_masks[(p.index, plan.index)] = masks[p.index] & (((1 << hi) - 1) ^ ((1 << lo) - 1))
    expected = {plan.index: 0 for plan in steps}
    delivered = {plan.index: 0 for plan in steps}
    lost_total = unexpected = 0
    worst: list[tuple[int, str]] = []
    for s in subs:
        got_bits = {int(k): int.from_bytes(v, "little") for k, v in s["bits"].items()}
        missing = 0
        for p in by_room.get(s["room"], []):
            bits = got_bits.get(p.index, 0)
            unexpected += (bits & ~masks[p.index]).bit_count()
            for plan in steps:
                m = step_masks[(p.index, plan.index)]
                want = m.bit_count()
                got = (bits & m).bit_count()
                expected[plan.index] += want
                delivered[plan.index] += got
                missing += want - got
        lost_total += missing
        if missing:
            worst.append((missing, s["name"]))
    ids = _id_check(pubs, workers)
    worst.sort(reverse=True)
    return {
        "expected": sum(expected.values()),
        "delivered": sum(delivered.values()),
        "lost": lost_total,
        "duplicates": sum(s["duplicates"] for s in subs),
        "disorder": sum(s["disorder"] for s in subs),
        "id_mismatch": ids["mismatch"],
        "unconfirmed_received": unexpected,
        "foreign_frames": sum(s["foreign"] for s in subs),
        "subscribers_closed": sum(1 for s in subs if s["closed"]),
        "close_codes": _count(str(s["close_code"]) for s in subs if s["closed"]),
        "worst_subscribers": [f"{n}: {m} missing" for m, n in worst[:10]],
        "by_step": {k: {"expected": expected[k], "delivered": delivered[k]} for k in expected},
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _id_check(pubs: Sequence[PubRecord], workers: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The id each worker saw for (publisher, seq) must be the confirmed one."""
    confirmed = {(p.index << 40) | seq: sid for p in pubs for seq, sid in enumerate(p.ids)
                 if sid is not None}
    mismatch = sum(w["id_mismatch"] for w in workers)
    for w in workers:
        for key, sid in w["ids"].items():
            want = confirmed.get(key)
            if want is not None and want != sid:
                mismatch += 1
    return {"mismatch": mismatch}


def received_between(per_sec: Mapping[int, int], a: float, b: float) -> float:
    """Deliveries received in [a, b) seconds, from per-second counts (edges pro rata)."""
    total = 0.0
    for sec, n in per_sec.items():
        overlap = min(b, sec + 1) - max(a, sec)
        if overlap > 0:
            total += n * overlap
    return total


def step_rows(pubs: Sequence[PubRecord], workers: Sequence[Mapping[str, Any]],
              steps: Sequence[StepPlan], checked: Mapping[str, Any],
              usage: Mapping[int, Mapping[str, Any]], criteria: Mapping[str, float],
              windows: Mapping[int, tuple[float, float]] | None = None,
              ) -> list[dict[str, Any]]:
    """One row per step. Loss and latency count the messages *published* in
    the step; throughput and deliveries per CPU-second count the deliveries
    *received* during the step's window, the same window the CPU was read
    over (under overload the two differ: the backlog arrives later). CPU per
    message divides the window's CPU by the messages confirmed in the step:
    the cost of a message wherever it falls (publish, notify, fan-out)."""
    per_sec: dict[int, int] = {}
    for w in workers:
        for sec, h in w["sec_hist"].items():
            per_sec[int(sec)] = per_sec.get(int(sec), 0) + sum(h.values())
    rows = []
    for plan in steps:
        k = plan.index
        hist = st.merged(w["step_hist"].get(k, {}) for w in workers)
        max_us = max((w["step_max"].get(k, 0) for w in workers), default=0)
        published = sum(sum(1 for s in p.steps if s == k) for p in pubs)
        confirmed = sum(1 for p in pubs for s, i in zip(p.steps, p.ids) if s == k and i is not None)
        if published == 0:
            continue
        exp = checked["by_step"][k]["expected"]
        got = checked["by_step"][k]["delivered"]
        u = usage.get(k, {})
        wall = u.get("wall_s") or plan.seconds
        server_cpu = u.get("server_cpu_s")
        watched_cpu = u.get("watched_cpu_s")
        lat = st.summary(hist, max_us if hist else None)
        ratio_ok = st.ratio(got, exp)
        win = (windows or {}).get(k)
        in_window = received_between(per_sec, *win) if win else float(got)
        row = {
            "index": k,
            "rate": plan.rate,
            "seconds": round(wall, 3),
            "published": published,
            "confirmed": confirmed,
            "expected": exp,
            "delivered": got,
            "delivered_ratio": ratio_ok,
            "deliveries_per_s": round(in_window / wall, 1) if wall else None,
            "offered_deliveries_per_s": round(exp / wall, 1) if wall else None,
            "latency_ms": lat,
            "server_cpu_s": server_cpu,
            "server_cpu_util": st.ratio(server_cpu, wall),
            "messages_per_s": round(confirmed / wall, 1) if wall else None,
            "deliveries_per_server_cpu_s": (round(in_window / server_cpu) if server_cpu else None),
            "server_cpu_us_per_message": _us_per(server_cpu, confirmed),
            "server_cpu_us_per_delivery": _us_per(server_cpu, in_window),
            "generator_cpu_util": st.ratio(u.get("generator_cpu_s"), wall),
            "generator_cpu_us_per_delivery": _us_per(u.get("generator_cpu_s"), in_window),
            "watched_cpu_util": st.ratio(watched_cpu, wall),
            "watched_cpu_us_per_message": _us_per(watched_cpu, confirmed),
            "redis_commands": u.get("redis_commands"),
        }
        row["pass"] = passes(row, criteria)
        rows.append(row)
    return rows


def _us_per(cpu_s: float | None, n: float) -> float | None:
    return round(cpu_s * 1e6 / n, 2) if cpu_s is not None and n else None


def passes(row: Mapping[str, Any], criteria: Mapping[str, float]) -> bool:
    ratio = row.get("delivered_ratio")
    p99 = (row.get("latency_ms") or {}).get("p99")
    return (ratio is not None and ratio >= criteria["min_delivered"]
            and p99 is not None and p99 <= criteria["max_p99_ms"])


def headline(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The highest step that passed; ``first_failed_below`` names a lower step
    that failed, if any (on a shared machine one latency blip fails a step)."""
    passed = [r for r in rows if r["pass"]]
    if not passed:
        return None
    best = max(passed, key=lambda r: r["rate"])
    failed = [r["index"] for r in rows if not r["pass"] and r["rate"] < best["rate"]]
    return {"first_failed_below": failed[0] if failed else None,
            "step": best["index"], "rate": best["rate"],
            "deliveries_per_s": best["deliveries_per_s"],
            "p99_ms": best["latency_ms"]["p99"],
            "delivered_ratio": best["delivered_ratio"],
            "deliveries_per_server_cpu_s": best["deliveries_per_server_cpu_s"],
            "messages_per_s": best.get("messages_per_s"),
            "server_cpu_us_per_message": best.get("server_cpu_us_per_message"),
            "watched_cpu_us_per_message": best.get("watched_cpu_us_per_message")}


def timeline(workers: Sequence[Mapping[str, Any]], published_per_s: Mapping[int, int],
             cpu_per_s: Mapping[int, Mapping[str, float]]) -> list[dict[str, Any]]:
    secs: set[int] = set(published_per_s) | set(cpu_per_s)
    for w in workers:
        secs |= {int(k) for k in w["sec_hist"]}
    out = []
    for sec in sorted(secs):
        hist = st.merged(w["sec_hist"].get(sec, {}) for w in workers)
        row: dict[str, Any] = {"t": sec, "published": published_per_s.get(sec, 0),
                               "delivered": st.count(hist)}
        for p in (50.0, 90.0, 99.0):
            row[f"p{p:g}_ms"] = st.percentile(hist, p)
        row["max_ms"] = st.percentile(hist, 100.0)
        row.update(cpu_per_s.get(sec, {}))
        out.append(row)
    return out


def ack_latency(pubs: Sequence[PubRecord]) -> dict[str, Any]:
    hist = st.new_hist()
    for p in pubs:
        for sent, ack in zip(p.sent_ns, p.ack_ns):
            if ack:
                st.add(hist, (ack - sent) // 1000)
    return st.summary(st.sparse(hist))
