"""What a drill found: the room's final history against what clients were told.

Pure: plain records in, :class:`Findings` out, no I/O. The drill
(:mod:`ops.drill`) feeds it; tests feed it synthetic records.

The rules, all by id, never by count:

- **confirmed-but-lost**: a publish answered ``published`` whose id is not in
  the final history, or whose id holds another client_id there.
- **duplicate**: a client_id stored under more than one id in the history.
- **history disorder**: the history read back is not in strictly increasing
  id order.
- **unconfirmed**: a message its publisher never got confirmed (it gave up,
  or was rejected): with retries on the same client_id every message must
  end up stored once.
- per subscriber, against the history after its first join point (the
  ``last_id`` of its first ``joined``):
  **gaps** (history ids it never received), **duplicates** (ids received
  more than once), **disorder** (ids received after a larger one),
  **phantoms** (ids not in the final history: a message a failover erased,
  which no client may ever be handed), **early** (history ids at or before
  its join point), ``recovered: false`` joins, and a subscriber that gave up
  resuming or never joined.
- **publishing resumed**: at least one message first sent after the fault
  was confirmed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def id_key(sid: str) -> tuple[int, int]:
    """Stream id order: ``<ms>-<seq>`` compared numerically."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Stored:
    """One history entry: its id and the client_id its body carries."""

    id: str
    client_id: str | None


@dataclass(frozen=True)
class Publish:
    """One message as its publisher saw it (times: any monotonic clock)."""

    client_id: str
    outcome: str  # published | gave_up | rejected:<code> | pending
    id: str | None = None
    first_sent: float | None = None
    confirmed_at: float | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class Reception:
    """One subscriber's view: every id received in order, across reconnects."""

    name: str
    join_point: str | None  # last_id of the first `joined`; None: never joined
    received: Sequence[str]
    reconnects: int = 0
    not_recovered: int = 0
    gave_up: str | None = None


@dataclass
class SubscriberFindings:
    name: str
    received: int
    expected: int
    gaps: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    disorder: list[str] = field(default_factory=list)
    phantoms: list[str] = field(default_factory=list)
    early: list[str] = field(default_factory=list)
    reconnects: int = 0
    not_recovered: int = 0
    gave_up: str | None = None
    joined: bool = True

    def problems(self) -> list[str]:
        out = []
        if not self.joined:
            out.append(f"{self.name}: never joined")
        for what, ids in (("gaps", self.gaps), ("duplicates", self.duplicates),
                          ("out of order", self.disorder), ("phantoms", self.phantoms),
                          ("received at or before its join point", self.early)):
            if ids:
                out.append(f"{self.name}: {len(ids)} {what} (first {ids[:3]})")
        if self.not_recovered:
            out.append(f"{self.name}: {self.not_recovered} join(s) answered recovered:false")
        if self.gave_up:
            out.append(f"{self.name}: gave up resuming ({self.gave_up})")
        return out


@dataclass
class Findings:
    attempted: int
    confirmed: int
    history: int
    unconfirmed: list[str] = field(default_factory=list)
    confirmed_lost: list[str] = field(default_factory=list)  # "client_id -> id: why"
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # client_id -> ids
    history_disorder: list[str] = field(default_factory=list)
    longest_gap_s: float = 0.0  # between consecutive confirmations
    longest_gap_from: float | None = None  # when that gap began (same clock as the input)
    max_latency_s: float = 0.0  # first send -> confirmation, one message
    p50_latency_s: float = 0.0
    p99_latency_s: float = 0.0
    retried_duplicates: int = 0  # `published` answers with duplicate: true (a safe retry)
    confirmed_after_fault: int | None = None  # None: no fault time given
    subscribers: list[SubscriberFindings] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.confirmed_lost:
            out.append(f"{len(self.confirmed_lost)} confirmed but lost (first {self.confirmed_lost[:3]})")
        if self.duplicates:
            first = list(self.duplicates.items())[:3]
            out.append(f"{len(self.duplicates)} client_ids stored more than once (first {first})")
        if self.history_disorder:
            out.append(f"history out of id order at {self.history_disorder[:3]}")
        if self.unconfirmed:
            out.append(f"{len(self.unconfirmed)} messages never confirmed (first {self.unconfirmed[:3]})")
        if self.confirmed_after_fault == 0:
            out.append("publishing did not resume after the fault")
        for s in self.subscribers:
            out += s.problems()
        return out

    @property
    def clean(self) -> bool:
        return not self.problems()


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _repeated(ids: Iterable[str]) -> list[str]:
    return [i for i, n in Counter(ids).items() if n > 1]


def check_subscriber(r: Reception, history_ids: Sequence[str]) -> SubscriberFindings:
    """One subscriber's sequence against the history after its join point."""
    f = SubscriberFindings(r.name, len(r.received), 0, reconnects=r.reconnects,
                           not_recovered=r.not_recovered, gave_up=r.gave_up)
    in_history = set(history_ids)
    f.phantoms = [i for i in dict.fromkeys(r.received) if i not in in_history]
    f.duplicates = _repeated(r.received)
    if r.join_point is None:
        f.joined = False
        return f
    start = id_key(r.join_point)
    expected = [i for i in history_ids if id_key(i) > start]
    f.expected = len(expected)
    got = set(r.received)
    f.gaps = [i for i in expected if i not in got]
    f.early = [i for i in dict.fromkeys(r.received) if i in in_history and id_key(i) <= start]
    seen: set[str] = set()
    highest: tuple[int, int] | None = None
    for i in r.received:
        if i in seen:
            continue  # counted as a duplicate
        seen.add(i)
        k = id_key(i)
        if highest is not None and k < highest:
            f.disorder.append(i)
        highest = k if highest is None else max(highest, k)
    return f


def check(history: Sequence[Stored], publishes: Sequence[Publish],
          receptions: Sequence[Reception], *, fault_at: float | None = None) -> Findings:
    """Everything a drill checks; see the module docstring for the rules."""
    ids = [h.id for h in history]
    confirmed = [p for p in publishes if p.outcome == "published" and p.id is not None]
    f = Findings(attempted=len(publishes), confirmed=len(confirmed), history=len(history))

    f.history_disorder = [b for a, b in zip(ids, ids[1:]) if id_key(b) <= id_key(a)]
    by_cid: dict[str, list[str]] = {}
    for h in history:
        if h.client_id is not None:
            by_cid.setdefault(h.client_id, []).append(h.id)
    f.duplicates = {c: v for c, v in by_cid.items() if len(v) > 1}

    holder = {h.id: h.client_id for h in history}
    for p in confirmed:
        assert p.id is not None
        if p.id not in holder:
            f.confirmed_lost.append(f"{p.client_id} -> {p.id}: not in history")
        elif holder[p.id] != p.client_id:
            f.confirmed_lost.append(f"{p.client_id} -> {p.id}: holds {holder[p.id]}")
    f.unconfirmed = [f"{p.client_id} ({p.outcome})" for p in publishes if p.outcome != "published"]
    f.retried_duplicates = sum(1 for p in confirmed if p.duplicate)

    f.longest_gap_s, f.longest_gap_from = longest_gap(p.confirmed_at for p in confirmed
                                                     if p.confirmed_at is not None)
    latencies = [p.confirmed_at - p.first_sent for p in confirmed
                 if p.confirmed_at is not None and p.first_sent is not None]
    f.max_latency_s = max(latencies, default=0.0)
    f.p50_latency_s = _percentile(latencies, 0.50)
    f.p99_latency_s = _percentile(latencies, 0.99)
    if fault_at is not None:
        f.confirmed_after_fault = sum(1 for p in confirmed
                                      if p.first_sent is not None and p.first_sent >= fault_at)

    f.subscribers = [check_subscriber(r, ids) for r in receptions]
    return f


def longest_gap(times: Iterable[float]) -> tuple[float, float | None]:
    """The longest wait between consecutive instants (confirmations, say) and
    when it began: how long publishing stalled. (0.0, None) for fewer than two."""
    ordered = sorted(times)
    gaps = [(b - a, a) for a, b in zip(ordered, ordered[1:])]
    if not gaps:
        return 0.0, None
    length, began = max(gaps)
    return length, began


def entries_erased(old_master_ids: Iterable[str], history_ids: Iterable[str],
                   confirmed_ids: Iterable[str], received_ids: Iterable[str]) -> dict[str, list[str]]:
    """A resumed old master's extra entries, and whether anyone was told of them.

    ``old_master_ids``: the room's stream read on the old master right after
    it resumed. Entries there but not in the final history were accepted by
    a master that had already been replaced; none of them may have been
    confirmed to a publisher or delivered to a subscriber.
    """
    final = set(history_ids)
    erased = sorted({i for i in old_master_ids if i not in final}, key=id_key)
    confirmed, received = set(confirmed_ids), set(received_ids)
    return {
        "erased": erased,
        "confirmed": [i for i in erased if i in confirmed],
        "delivered": [i for i in erased if i in received],
    }
