"""Pure numbers for the load-test tool: latency histograms and process usage.

Latencies are kept in a log-linear histogram of microseconds (64 sub-buckets
per power of two, so every value is known to within 1.6 %; exact below
128 µs). Adding a value is a few integer operations on a list, cheap enough
for the receive path of a generator that must not become the bottleneck,
and histograms from several processes merge by adding counts.

Process usage comes from ``/proc/<pid>/stat`` (utime + stime, in clock
ticks) and ``/proc/<pid>/status`` (VmRSS), so it works for any pid on the
host, not only for children of this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SUB_BITS = 6
SUB = 1 << SUB_BITS  # sub-buckets per power of two
# Enough buckets for 2^40 µs (12 days): nothing we measure gets near it.
BUCKETS = (40 - SUB_BITS) * SUB + 2 * SUB
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_of(us: int) -> int:
    """The bucket index of a latency in microseconds (negative counts as 0)."""
    if us < 2 * SUB:
        return us if us > 0 else 0
    shift = us.bit_length() - SUB_BITS - 1
    return shift * SUB + (us >> shift)


def bucket_bounds(idx: int) -> tuple[int, int]:
    """[low, high) in microseconds of the values that land in ``idx``."""
    if idx < 2 * SUB:
        return idx, idx + 1
    shift = idx // SUB - 1
    mant = idx - shift * SUB
    return mant << shift, (mant + 1) << shift


def new_hist() -> list[int]:
    return [0] * BUCKETS


def add(hist: list[int], us: int) -> None:
    hist[min(bucket_of(us), BUCKETS - 1)] += 1


def sparse(hist: list[int]) -> dict[int, int]:
    """The non-zero buckets (what crosses a process boundary or goes to JSON)."""
    return {i: c for i, c in enumerate(hist) if c}


def merge(into: dict[int, int], other: Mapping[int | str, int]) -> dict[int, int]:
    for k, c in other.items():
        i = int(k)
        into[i] = into.get(i, 0) + c
    return into


def merged(hists: Iterable[Mapping[int | str, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        merge(out, h)
    return out


def count(hist: Mapping[int, int]) -> int:
    return sum(hist.values())


def percentile(hist: Mapping[int, int], pct: float) -> float | None:
    """The ``pct`` percentile in milliseconds (a bucket's upper bound), None if empty."""
    total = count(hist)
    if total == 0:
        return None
    rank = max(1, -(-total * pct // 100))  # ceil: the smallest value with pct % at or below it
    seen = 0
    for idx in sorted(hist):
        seen += hist[idx]
        if seen >= rank:
            return bucket_bounds(idx)[1] / 1000.0
    return bucket_bounds(max(hist))[1] / 1000.0


def summary(hist: Mapping[int, int], max_us: int | None = None) -> dict[str, float | int | None]:
    """count, p50/p90/p99/p99.9 and max in ms (max exact when ``max_us`` is given)."""
    out: dict[str, float | int | None] = {"count": count(hist)}
    for p in PERCENTILES:
        out[f"p{p:g}".replace(".", "_")] = percentile(hist, p)
    if max_us is not None and hist:
        out["max"] = max_us / 1000.0
    elif hist:
        out["max"] = bucket_bounds(max(hist))[1] / 1000.0
    else:
        out["max"] = None
    return out


# --- processes ------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """One reading of a process: CPU seconds so far and resident memory."""

    pid: int
    cpu_s: float
    rss_kib: int


def read_usage(pid: int) -> Usage | None:
    """CPU seconds (user + system, all threads) and RSS of ``pid``; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # Field 2 (the command) may hold spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
            break
    return Usage(pid, (utime + stime) / TICKS, rss)


def cpu_between(before: Mapping[int, Usage | None], after: Mapping[int, Usage | None]) -> float:
    """CPU seconds that the pids used between two readings (gone pids count 0)."""
    total = 0.0
    for pid, a in after.items():
        b = before.get(pid)
        if a is not None and b is not None:
            total += a.cpu_s - b.cpu_s
    return total


def read_all(pids: Iterable[int]) -> dict[int, Usage | None]:
    return {pid: read_usage(pid) for pid in pids}


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return num / den
