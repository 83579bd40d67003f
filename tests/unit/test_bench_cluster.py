"""The pure parts of ops.load.bench_cluster: rooms spread by slot, CPU shares,
the comparison against the targets."""

from __future__ import annotations

from ops.load import bench_cluster as bc
from ops.load.run import room_name
from ops.local.redis_cluster import key_slot

# What `redis-cli --cluster create` assigns to three masters.
RANGES = [(a, b, 7000 + m) for a, b, m in bc.CREATE_RANGES]


def test_a_room_hashes_on_its_name_as_its_keys_do() -> None:
    room = room_name("c00001", 7)
    assert key_slot(f"sg:{{{room}}}:log") == key_slot(room) == key_slot(f"x:{{{room}}}:epoch")


def test_balanced_run_id_splits_rooms_evenly() -> None:
    run_id, counts = bc.balanced_run_id(300, RANGES)
    assert counts == {7001: 100, 7002: 100, 7003: 100}
    assert bc.rooms_by_master(run_id, 300, RANGES) == counts
    _, odd = bc.balanced_run_id(31, RANGES)
    assert sum(odd.values()) == 31 and max(odd.values()) - min(odd.values()) <= 1


def test_shares_and_comparison() -> None:
    s = bc.shares({1: 10.0, 2: 20.0, 3: 0.0}, {1: 13.0, 2: 23.3, 3: 3.6})
    assert [s[p]["share"] for p in (1, 2, 3)] == [0.303, 0.3333, 0.3636]
    single = {"total_us_per_delivery": 100.0, "server_us_per_delivery": 90.0,
              "masters_us_per_delivery": 10.0, "masters_us_per_message": 80.0, "p99_ms": 20.0}
    cluster = {"total_us_per_delivery": 108.0, "server_us_per_delivery": 96.0,
               "masters_us_per_delivery": 12.0, "masters_us_per_message": 96.0, "p99_ms": 22.0,
               "masters": {str(p): v for p, v in s.items()}}
    cmp = bc.compare(single, cluster)
    assert cmp["cluster_over_single"]["total_us_per_delivery"] == 1.08
    assert cmp["master_share_vs_a_third"]["1"] == -0.091
    assert cmp["shares_within_tolerance"] and cmp["cost_within_tolerance"]
    cluster["masters"]["1"] = {"cpu_s": 1.0, "share": 0.25}
    cluster["total_us_per_delivery"] = 115.0
    cmp = bc.compare(single, cluster)
    assert not cmp["shares_within_tolerance"] and not cmp["cost_within_tolerance"]


def test_env_settings_reach_both_modes_options() -> None:
    from ops.load.bench_cluster import parse_args

    opts = parse_args(["--env", "DURABILITY=replica", "--env", "REPLICA_ACK_TIMEOUT_MS=500"])
    assert opts.env == (("DURABILITY", "replica"), ("REPLICA_ACK_TIMEOUT_MS", "500"))
    assert parse_args([]).env == ()
