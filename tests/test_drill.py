"""The failover drill: its checks on synthetic records, then each fault for real.

The report logic (ops/drill/report.py) is pure and tested table-style: one
synthetic history, confirmations and subscriber sequences per kind of
finding. The cluster tests run a short drill of each fault through nginx on
one private cluster (two replicas, three sentinels, three instances), in the
order of ``python -m ops.drill --fault all``: each phase restores the
cluster (killed node started again, sentinels seeing it) before the next.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.drill import drill
from ops.drill import faults as drill_faults
from ops.local import cluster, procs
from ops.drill.report import (
    Publish,
    Reception,
    Stored,
    check,
    check_subscriber,
    entries_erased,
)
from ops.load.traffic import Endpoint
from tests.support.timeouts import scaled

# --- synthetic records ------------------------------------------------------------------

IDS = [f"100-{i}" for i in range(6)]


def history(ids: list[str] = IDS, cids: list[str] | None = None) -> list[Stored]:
    return [Stored(i, c) for i, c in zip(ids, cids or [f"c{n}" for n in range(len(ids))])]


def confirmed(ids: list[str] = IDS, t0: float = 10.0, step: float = 0.1) -> list[Publish]:
    return [Publish(f"c{n}", "published", i, t0 + n * step, t0 + n * step + 0.01)
            for n, i in enumerate(ids)]


def sub(received: list[str], join_point: str | None = "0-0", **kw: object) -> Reception:
    return Reception("s", join_point, received, **kw)  # type: ignore[arg-type]


def test_a_clean_run_has_no_findings() -> None:
    f = check(history(), confirmed(), [sub(IDS), sub(IDS[2:], join_point=IDS[1])], fault_at=10.2)
    assert f.clean, f.problems()
    assert (f.attempted, f.confirmed, f.history) == (6, 6, 6)
    assert f.confirmed_after_fault == 4
    assert [s.expected for s in f.subscribers] == [6, 4]


def test_confirmed_but_lost_missing_or_holding_another_message() -> None:
    pubs = confirmed()
    hist = history(IDS[:5], ["c0", "c1", "c2", "cX", "c4"])  # 100-3 holds cX, 100-5 gone
    f = check(hist, pubs, [])
    assert f.confirmed_lost == ["c3 -> 100-3: holds cX", "c5 -> 100-5: not in history"]
    assert not f.clean


def test_duplicates_and_history_disorder() -> None:
    hist = [Stored("100-0", "c0"), Stored("100-2", "c1"), Stored("100-1", "c1")]
    f = check(hist, [], [])
    assert f.duplicates == {"c1": ["100-2", "100-1"]}
    assert f.history_disorder == ["100-1"]
    assert len(f.problems()) == 2


def test_unconfirmed_and_publishing_that_never_resumed() -> None:
    pubs = confirmed(IDS[:3]) + [Publish("c3", "gave_up", first_sent=11.0),
                                 Publish("c4", "rejected:forbidden", first_sent=11.1)]
    f = check(history(IDS[:3]), pubs, [], fault_at=10.5)
    assert f.unconfirmed == ["c3 (gave_up)", "c4 (rejected:forbidden)"]
    assert f.confirmed_after_fault == 0
    assert "publishing did not resume after the fault" in f.problems()


def test_stall_figures() -> None:
    pubs = [Publish("a", "published", "1-0", 0.0, 0.01), Publish("b", "published", "2-0", 0.02, 0.03),
            Publish("c", "published", "3-0", 0.04, 2.54), Publish("d", "published", "4-0", 2.6, 2.61)]
    f = check(history(["1-0", "2-0", "3-0", "4-0"], ["a", "b", "c", "d"]), pubs, [])
    assert f.longest_gap_s == pytest.approx(2.51)
    assert f.longest_gap_from == pytest.approx(0.03)
    assert f.max_latency_s == pytest.approx(2.5)
    assert f.clean


@pytest.mark.parametrize(
    ("received", "join_point", "field", "value"),
    [
        (IDS[:2] + IDS[3:], "0-0", "gaps", ["100-2"]),
        (IDS[:3] + ["100-2"] + IDS[3:], "0-0", "duplicates", ["100-2"]),
        (["100-0", "100-2", "100-1"] + IDS[3:], "0-0", "disorder", ["100-1"]),
        (IDS + ["100-9"], "0-0", "phantoms", ["100-9"]),
        (IDS[1:], "100-2", "early", ["100-1", "100-2"]),
    ],
    ids=["gap", "duplicate", "disorder", "phantom", "before-join-point"],
)
def test_each_subscriber_finding(received: list[str], join_point: str, field: str,
                                 value: list[str]) -> None:
    s = check_subscriber(sub(received, join_point), IDS)
    assert getattr(s, field) == value
    others = {"gaps", "duplicates", "disorder", "phantoms", "early"} - {field}
    assert all(not getattr(s, o) for o in others), s
    assert len(s.problems()) == 1


def test_subscriber_that_never_joined_gave_up_or_was_not_recovered() -> None:
    assert check_subscriber(sub([], None), IDS).problems() == ["s: never joined"]
    s = check_subscriber(sub(IDS, not_recovered=1, gave_up="could not resume for 60s"), IDS)
    assert len(s.problems()) == 2
    assert check_subscriber(sub(IDS, reconnects=3), IDS).problems() == []


def test_entries_only_the_old_master_had() -> None:
    found = entries_erased(["100-0", "100-7", "100-8", "100-9"], IDS,
                           confirmed_ids=["100-8"], received_ids=["100-9", "100-0"])
    assert found == {"erased": ["100-7", "100-8", "100-9"], "confirmed": ["100-8"],
                     "delivered": ["100-9"]}


def test_endpoint_urls() -> None:
    e = Endpoint("http://127.0.0.1:8080/")
    assert e.ws_url("u1") == "ws://127.0.0.1:8080/ws?user=u1"
    assert e.http_url("/rooms/r/messages", "u1", after="0") == \
        "http://127.0.0.1:8080/rooms/r/messages?after=0&user=u1"
    t = Endpoint("https://h/", token="T")
    assert t.ws_url("u1") == "wss://h/ws" and t.subprotocols() == ["streamgate.v1", "bearer.T"]


def test_cluster_replicas_option() -> None:
    assert cluster.parse_args(["up"]).replicas == 1
    assert cluster.parse_args(["up", "--replicas", "2"]).replicas == 2
    with pytest.raises(SystemExit):
        cluster.parse_args(["up", "--replicas", "0"])


# --- the drill against a real cluster ---------------------------------------------------

OPTS = drill.DrillOptions(duration=5.0, rate=50.0, publishers=2, subscribers=3)


@pytest.fixture(scope="module")
def drill_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[drill_faults.ClusterView]:
    if not all(shutil.which(b) for b in ("redis-server", "redis-sentinel", "nginx")):
        pytest.skip("redis-server, redis-sentinel and nginx are needed")
    state_dir: Path = tmp_path_factory.mktemp("drill") / "cluster"
    try:
        yield drill.start_own_cluster(state_dir)
    finally:
        left = drill.stop_own_cluster(state_dir)
        assert left == [], f"processes left running: {left}"


@pytest.mark.slow
@pytest.mark.failover
@pytest.mark.timeout(scaled(150))
@pytest.mark.parametrize("fault", drill_faults.FAULTS)
async def test_drill_is_clean(drill_cluster: drill_faults.ClusterView, fault: str) -> None:
    view = drill_cluster
    await asyncio.to_thread(view.wait_ready, scaled(60))
    last = fault == drill_faults.FAULTS[-1]
    report = await drill.run_phase(view, fault, OPTS, restore=not last)
    text = "\n".join(drill.format_phase(report, OPTS))
    assert report.clean, text
    f = report.findings
    assert f.confirmed == f.attempted > 100, text
    assert f.confirmed_after_fault and f.confirmed_after_fault > 20, text
    assert all(s.received == s.expected == f.history for s in f.subscribers), text
    if fault in ("kill-master", "freeze-master"):
        assert report.figures.get("new master"), text
        assert float(report.figures["time to new master (s)"]) < 10, text  # type: ignore[arg-type]
    if fault == "freeze-master":
        assert report.figures["old master role on resume"] == "slave" or \
            str(report.figures.get("old master write probe on resume")).startswith("refused"), text
    if fault == "kill-instance":
        # Whoever sat on the killed instance came back through nginx.
        assert report.figures["drill clients on it"] == 0 or report.retries or \
            any(s.reconnects for s in f.subscribers), text
    if not last:
        assert all(procs.is_alive(p.pid, p.started) for p in view.procs()), "not restored"
