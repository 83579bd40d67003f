"""The load-test tool: its pure report logic, then one tiny real run.

The real run is a smoke test of ``python -m ops.load.loadtest`` itself (20
subscribers, one publisher, 2 s, two instances on the session Redis): it
checks that the JSON report is complete and that every delivery was
verified, not how fast anything was. Benchmarks are not timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.load import stats as st
from ops.load.report import PubRecord, StepPlan, headline, passes, verify
from tests.support import Instance
from tests.support.timeouts import scaled

try:  # the fast client comes with the bench extra; the smoke run works without it
    import picows  # noqa: F401

    CLIENT = "picows"
except ImportError:
    CLIENT = "websockets"

# --- histogram ---------------------------------------------------------------------


@pytest.mark.parametrize("us", [0, 1, 127, 128, 129, 1000, 65_535, 1_000_000, 59_999_999])
def test_a_value_lands_in_a_bucket_that_contains_it(us: int) -> None:
    low, high = st.bucket_bounds(st.bucket_of(us))
    assert low <= us < high
    assert (high - low) / max(low, 1) <= 1 / 64 or high - low == 1


def test_percentiles_and_merge() -> None:
    a, b = st.new_hist(), st.new_hist()
    for us in range(1, 1001):  # 1 µs .. 1 ms
        st.add(a, us)
    st.add(b, 50_000)  # one 50 ms outlier
    h = st.merged([st.sparse(a), st.sparse(b)])
    assert st.count(h) == 1001
    assert st.percentile(h, 50.0) == pytest.approx(0.5, rel=0.02)
    assert st.percentile(h, 100.0) == pytest.approx(50.0, rel=0.02)
    s = st.summary(h, max_us=50_000)
    assert s["max"] == 50.0 and s["p99"] is not None and s["p99"] < 1.1


# --- verification on synthetic records ----------------------------------------------------


def _bits(seqs: list[int]) -> bytes:
    out = bytearray(16)
    for s in seqs:
        out[s >> 3] |= 1 << (s & 7)
    return bytes(out)


def _worker(subs: list[dict[str, object]], ids: dict[int, str] | None = None) -> dict[str, object]:
    return {"subs": subs, "ids": ids or {}, "id_mismatch": 0, "step_hist": {}, "step_max": {},
            "sec_hist": {}}


def _sub(name: str, seqs: list[int], **kw: object) -> dict[str, object]:
    base = {"name": name, "room": "r", "bits": {0: _bits(seqs)}, "duplicates": 0, "disorder": 0,
            "foreign": 0, "closed": False, "close_code": None}
    base.update(kw)
    return base


def _pub() -> PubRecord:
    # seqs 0-2 in step 0, 3-5 in step 1; seq 4 never confirmed
    ids: list[str | None] = ["1-0", "1-1", "1-2", "2-0", None, "2-2"]
    return PubRecord(0, "r", [0] * 6, [0, 0, 0, 1, 1, 1], ids, [0] * 6)


STEPS = [StepPlan(0, 10, 1), StepPlan(1, 20, 1)]


def test_every_confirmed_message_counted_per_step() -> None:
    v = verify([_pub()], [_worker([_sub("a", [0, 1, 2, 3, 5]), _sub("b", [0, 2, 3, 4, 5])])], STEPS)
    assert v["expected"] == 10 and v["delivered"] == 9 and v["lost"] == 1
    assert v["by_step"] == {0: {"expected": 6, "delivered": 5}, 1: {"expected": 4, "delivered": 4}}
    assert v["unconfirmed_received"] == 1  # b got seq 4, whose answer never came
    assert v["worst_subscribers"] == ["b: 1 missing"]


def test_a_wrong_id_for_a_confirmed_message_is_a_mismatch() -> None:
    worker = _worker([_sub("a", [0])], ids={(0 << 40) | 0: "9-9"})
    assert verify([_pub()], [worker], STEPS)["id_mismatch"] == 1


def test_headline_is_the_highest_passing_step() -> None:
    crit = {"min_delivered": 0.999, "max_p99_ms": 100.0}
    rows = [{"index": i, "rate": r, "deliveries_per_s": r * 100, "delivered_ratio": d,
             "latency_ms": {"p99": p}, "deliveries_per_server_cpu_s": 1}
            for i, (r, d, p) in enumerate([(10, 1.0, 5), (20, 1.0, 90), (30, 0.99, 20), (40, 1.0, 9)])]
    for row in rows:
        row["pass"] = passes(row, crit)
    assert [r["pass"] for r in rows] == [True, True, False, True]
    best = headline(rows)
    assert best is not None and best["rate"] == 40 and best["first_failed_below"] == 2
    assert headline([dict(rows[2])]) is None


# --- one tiny real run ----------------------------------------------------------------


def test_smoke_run_reports_every_delivery_verified(
    make_instance: Callable[..., Instance], tmp_path: Path
) -> None:
    a, b = make_instance("LT1"), make_instance("LT2")
    out = tmp_path / "smoke.json"
    cmd = [sys.executable, "-m", "ops.load.loadtest", "--url", a.url, "--url", b.url,
           "--subscribers", "20", "--publishers", "1", "--rate", "20", "--duration", "2",
           "--server-pid", str(a.pid), "--server-pid", str(b.pid), "--out", str(out), "--quiet",
           "--client", CLIENT]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(90))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    for key in ("config", "clock", "totals", "steps", "headline", "servers", "generator",
                "timeline", "publish_ack_latency_ms", "deliveries_per_server_cpu_s",
                "server_kib_per_connection", "files"):
        assert key in report, key
    t = report["totals"]
    assert report["ok"] is True
    assert report["subscribers"]["joined"] == 20
    assert set(report["subscribers"]["by_instance"]) == {a.instance_id, b.instance_id}
    assert t["expected"] > 0 and t["delivered"] == t["expected"]
    assert (t["lost"], t["duplicates"], t["disorder"], t["id_mismatch"]) == (0, 0, 0, 0)
    assert t["latency_ms"]["p50"] is not None and t["latency_ms"]["max"] is not None
    assert report["steps"][0]["latency_ms"]["p99"] is not None
    assert all(s["cpu_s"] is not None and s["rss_kib_end"] for s in report["servers"])
    assert report["generator"]["cpu_s"] >= 0


def test_the_replay_probe_counts_frames_alike_on_its_fast_path_and_its_full_parse() -> None:
    """The replay probe checks message frames laid out as the server lays them
    without decoding them; anything else is decoded. Both must count the same
    messages, disorder and last id, and ignore other rooms' messages."""
    import orjson

    from ops.load.client import ReplayState

    def frame(room: str, sid: str, **extra: object) -> bytes:
        return orjson.dumps({"type": "message", "room": room, "id": sid, "from": "u",
                             "body": {"t": 'a"b'}, "ts": 1, **extra})

    frames = [frame("r-1", "5-0"), frame("r-1", "5-1"), frame("r-10", "9-0"),
              frame("r-1", "4-0"),  # out of order
              b'{"room":"r-1","type":"message","id":"6-0","body":null}',  # other key order
              frame("r-1", "7-0")]
    fast, full = ReplayState("a", "r-1", "u"), ReplayState("b", "r-1", "u")
    full.prefix = b"\x00never"  # no frame starts so: every one is decoded
    for f in frames:
        fast.on_text(f)
        full.on_text(f)
    for s in (fast, full):
        assert (s.count, s.disorder, s.last_id) == (5, 1, "7-0")
