"""Instances in cluster mode, on the session cluster or on a test's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
import pytest

from ops.local.redis_cluster import LocalCluster, key_slot
from streams.keys import Keys
from tests.conftest import BASE_ENV, InstanceFactory
from tests.support import Instance


KEYS = Keys(BASE_ENV["KEY_PREFIX"])


class ClusterInstances(InstanceFactory):
    """Instances with ``REDIS_CLUSTER_NODES`` set to the cluster's nodes."""

    def __init__(self, cluster: LocalCluster, root: Path) -> None:
        super().__init__(f"redis://127.0.0.1:{cluster.ports[0]}/0", root)
        self.cluster = cluster

    def start(self, name: str, **env: str) -> Instance:
        return super().start(name, REDIS_CLUSTER_NODES=self.cluster.seeds, **env)


@pytest.fixture
def cluster_instances(redis_cluster: LocalCluster, tmp_path: Path) -> Iterator[ClusterInstances]:
    factory = ClusterInstances(redis_cluster, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def own_cluster_instances(own_redis_cluster: LocalCluster, tmp_path: Path) -> Iterator[ClusterInstances]:
    factory = ClusterInstances(own_redis_cluster, tmp_path / "instances")
    yield factory
    factory.stop_all()


def room_slot(room: str) -> int:
    return key_slot(KEYS.log(room))


def rooms_on_every_master(cluster: LocalCluster, per_master: int) -> dict[int, list[str]]:
    """Fresh room names, ``per_master`` of them owned by each master."""
    masters = cluster.masters()
    out: dict[int, list[str]] = {m: [] for m in masters}
    for _ in range(10_000):
        if all(len(v) >= per_master for v in out.values()):
            return out
        room = f"room-{uuid.uuid4().hex[:12]}"
        owner = cluster.owner(room_slot(room))
        if len(out[owner]) < per_master:
            out[owner].append(room)
    raise AssertionError("could not spread rooms over the masters")

