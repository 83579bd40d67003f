"""The drill picks its faults by the topology state.json records, and
refuses a fault that does not fit it before touching anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.drill import drill
from ops.drill.faults import FAULTS, DrillError
from ops.drill.shard_faults import SHARD_FAULTS, room_slot
from ops.local.redis_cluster import key_slot

OPTS = drill.DrillOptions(duration=3.0)


def _state(tmp_path: Path, redis: str | None) -> Path:
    state = {"state_dir": str(tmp_path), "url": "http://127.0.0.1:1/", "processes": []}
    if redis is not None:
        state["redis"] = redis
    (tmp_path / "state.json").write_text(json.dumps(state))
    return tmp_path


@pytest.mark.parametrize("fault", FAULTS)
def test_sentinel_faults_are_refused_on_a_redis_cluster(tmp_path: Path, fault: str) -> None:
    with pytest.raises(DrillError, match="not a fault for this deployment"):
        drill._run(_state(tmp_path, "cluster"), fault, OPTS, restore_last=True)


@pytest.mark.parametrize("redis", [None, "sentinel"])
@pytest.mark.parametrize("fault", SHARD_FAULTS)
def test_cluster_faults_are_refused_on_sentinel(tmp_path: Path, redis: str | None,
                                                fault: str) -> None:
    # A state.json written before --redis existed counts as Sentinel.
    with pytest.raises(DrillError, match="not a fault for this deployment"):
        drill._run(_state(tmp_path, redis), fault, OPTS, restore_last=True)


def test_options_accept_every_fault_and_the_cluster_topology() -> None:
    for fault in (*FAULTS, *SHARD_FAULTS, "all"):
        assert drill.parse_args(["--fault", fault]).fault == fault
    assert drill.parse_args(["--own", "--redis", "cluster"]).redis == "cluster"
    assert drill.parse_args([]).redis == "sentinel"


def test_room_slot_is_the_slot_of_every_key_of_the_room() -> None:
    assert room_slot("lobby") == key_slot("sg:{lobby}:log") == key_slot("other:{lobby}:epoch")
