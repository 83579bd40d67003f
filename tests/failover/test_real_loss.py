"""Real loss: the master accepts writes that never reach its replicas, then dies.

A restart loses nothing, so the cut has to be real: the scenario runs in a
network namespace of its own, where nftables drops the traffic between the
master and its replicas (see ``scenarios/real_loss.py``). The entries the
old master accepted during the cut are gone after the failover.

- ``replica`` durability: nothing published during the cut is confirmed,
  no client ever receives an erased entry, everything confirmed survives,
  and the messages of the cut, repeated with their client_ids, are stored
  once on the new master.
- ``leader`` durability: confirmed messages are erased by the failover; a
  client holding an erased id that resumes with it gets ``recovered:false``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.failover.topology import PROGRAMS
from tests.support.ids import assert_ids_equal, id_key
from tests.support.programs import require
from tests.support.timeouts import scaled

pytestmark = [pytest.mark.failover, pytest.mark.timeout(150)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kwargs)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with loopback up; deleted with everything in it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    require("ip", "nft", *PROGRAMS)  # the scenario starts a Sentinel topology
    name = f"sgtest-{uuid.uuid4().hex[:8]}"
    created = _run(["ip", "netns", "add", name])
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    try:
        _run(["ip", "-n", name, "link", "set", "lo", "up"]).check_returncode()
        yield name
    finally:
        # Whatever the scenario left running in the namespace was started by it.
        pids = _run(["ip", "netns", "pids", name]).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        _run(["ip", "netns", "delete", name])


def run_scenario(netns: str, durability: str, root: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    cmd = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.failover.scenarios.real_loss",
           "--durability", durability, "--root", str(root)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=scaled(120))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise AssertionError(f"scenario exited with {done.returncode}\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(lines[-1])
    if "error" in report:
        raise AssertionError(f"scenario failed: {report['error']}\n{report.get('traceback')}\n"
                             f"{done.stderr[-3000:]}")
    return report


def _common(report: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Checks that hold for both durabilities; returns (final ids, erased ids)."""
    assert report["cut_effective"], (f"the cut did not stop replication: {report['accepted_on_replicas']} "
                                     f"{report['offsets']}")
    accepted = report["accepted_in_cut"]
    assert accepted, "the old master accepted nothing during the cut: no real loss to test"
    final = report["final_ids"]
    assert final == sorted(final, key=id_key)
    assert set(final) <= set(report["raw_ids"])
    erased = set(report["erased"])
    assert erased == set(accepted), (
        f"entries of the cut that survived the failover: {sorted(set(accepted) - erased)}")
    for name, got in report["received"].items():
        assert not set(got) - set(final) - erased, f"{name} received ids that never existed"
        assert_ids_equal([i for i in got if i not in erased], final, f"{name}: surviving messages")
    return set(final), erased


def test_replica_durability_confirms_nothing_that_a_failover_erases(netns: str, tmp_path: Path) -> None:
    report = run_scenario(netns, "replica", tmp_path)
    final, erased = _common(report)
    answers = report["cut_answers"]
    assert answers and all(f.get("code") == "unavailable" for f in answers.values()), (
        f"publishes during the cut must be refused: {answers}")
    for name, got in report["received"].items():
        assert not set(got) & erased, f"{name} received erased entries: {sorted(set(got) & erased)}"
    for cid, ids in report["published"].items():
        assert ids and all(i in final for i in ids), f"confirmed {cid} -> {ids} did not survive"
    assert report["account_error"] is None, report["account_error"]
    assert "resume_before_writes" not in report  # no client held an erased id
    print(f"replica: {len(erased)} entries erased, none delivered; cut answers "
          f"{sorted({f.get('code') for f in answers.values()})}; failover {report['failover_s']}s")


def test_leader_durability_loses_confirmed_messages_and_says_so(netns: str, tmp_path: Path) -> None:
    report = run_scenario(netns, "leader", tmp_path)
    final, erased = _common(report)
    published_in_cut = {f["id"] for f in report["cut_answers"].values() if f.get("type") == "published"}
    assert published_in_cut and published_in_cut <= erased, (
        f"leader durability: the cut's confirmed messages should be erased: "
        f"{sorted(published_in_cut)} vs erased {sorted(erased)}")
    resumed = report["resume_before_writes"]
    assert resumed["since"] in erased
    assert resumed["joined"]["recovered"] is False, resumed
    assert resumed["replayed"] == [], resumed
    survivors = [cid for cid, ids in report["published"].items() if set(ids) <= final]
    assert len(survivors) == len(report["published"]) - len(published_in_cut)
    print(f"leader: {len(erased)} confirmed entries erased by the failover; resuming from one "
          f"before new writes: {resumed['joined']}; after: "
          f"{report.get('resume_after_writes', {}).get('joined')}")
