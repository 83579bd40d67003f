"""`python -m ops.drill` against a Redis Cluster, in a short form.

One private deployment (`ops.cluster up --redis cluster`: three shards,
two instances, nginx). Each phase publishes to one room per shard; the
fault hits the first room's shard. Kill -9 of that shard's master must lose
nothing confirmed, duplicate nothing, hand no subscriber a gap or a phantom,
promote the replica within seconds, and leave the other shards' rooms
flowing; a live slot migration must go unnoticed by every client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.drill import drill
from ops.drill import shards as drill_shards
from ops.local import procs
from ops.drill.shard_faults import ShardView
from tests.support.programs import require
from tests.support.timeouts import scaled

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.failover]

OPTS = drill.DrillOptions(duration=5.0, rate=30.0, publishers=2, subscribers=2)


@pytest.fixture(scope="module")
def shard_view(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardView]:
    require("redis-server", "redis-cli", "nginx")
    state_dir: Path = tmp_path_factory.mktemp("shard-drill") / "cluster"
    try:
        drill.start_own_cluster(state_dir, instances=2, redis="cluster")
        yield ShardView(state_dir)
    finally:
        left = drill.stop_own_cluster(state_dir)
        assert left == [], f"processes left running: {left}"


def _run(view: ShardView, fault: str) -> tuple[drill_shards.ShardPhaseReport, str]:
    asyncio.run(asyncio.to_thread(view.wait_ready, scaled(60)))
    report = asyncio.run(drill_shards.run_shard_phase(view, fault, OPTS, restore=True))
    return report, "\n".join(drill_shards.format_shard_phase(report))


def _accounted(report: drill_shards.ShardPhaseReport, text: str) -> None:
    assert report.clean, text
    assert len(report.rooms) == 3 and len({r.shard for r in report.rooms}) == 3, text
    for r in report.rooms:
        f = r.findings
        assert f.confirmed == f.attempted > 50 and not f.confirmed_lost and not f.duplicates, text
        assert all(s.received == s.expected == f.history and not s.gaps and not s.phantoms
                   for s in f.subscribers), text


@pytest.mark.timeout(scaled(180))
def test_kill_shard_master(shard_view: ShardView) -> None:
    report, text = _run(shard_view, "kill-shard-master")
    _accounted(report, text)
    assert 0 < float(report.figures["time to new master (s)"]) < 10, text  # type: ignore[arg-type]
    hit = report.rooms[0]
    assert hit.target and hit.findings.confirmed_after_fault, text
    for r in report.rooms[1:]:
        assert r.findings.longest_gap_s < drill_shards.OTHER_SHARD_MAX_STALL_S, text
    assert all(procs.is_alive(p.pid, p.started) for p in shard_view.procs()), "not restored"


@pytest.mark.timeout(scaled(120))
def test_migrate_live_slot(shard_view: ShardView) -> None:
    report, text = _run(shard_view, "migrate-slot")
    _accounted(report, text)
    assert float(report.figures["every node agreed after (s)"]) < 10, text  # type: ignore[arg-type]
    assert all(s.reconnects == 0 for r in report.rooms for s in r.findings.subscribers), text


@pytest.mark.timeout(scaled(180))
def test_freeze_shard_master(shard_view: ShardView) -> None:
    report, text = _run(shard_view, "freeze-shard-master")
    _accounted(report, text)
    assert report.figures.get("new master"), text
    # Woken up, the old master is a replica, or at least refuses the write.
    assert report.figures["old master role on resume"] == "slave" or \
        str(report.figures["old master write probe on resume"]).startswith("refused"), text
    assert report.erased is not None and not report.erased["confirmed"] \
        and not report.erased["delivered"], text
    print(text)
