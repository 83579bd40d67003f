"""docker-compose.cluster.yml is valid and its nodes' command line is one
that redis-server accepts.

``docker-compose config`` reads the file as Docker would, with the
operator's settings given explicitly (none inherited, an empty env file
instead of a .env). The node command is then run for real on a free
loopback port (address and directory swapped for local ones), so a flag
Redis 7 does not know fails here rather than in a container.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ops.local import probes, procs
from ops.local.procs import Proc
from ops.local.redis_cluster import cluster_ports
from tests.support.timeouts import scaled

REPO = procs.REPO_ROOT
COMPOSE = REPO / "docker-compose.cluster.yml"
OPERATOR_ENV = {"JWT_SECRET": "s" * 32, "ALLOWED_ORIGINS": "https://chat.example.com"}
NODES = [f"redis-{i}" for i in range(1, 7)]
# The port every node listens on inside its container: the one the shipped
# config (ops/redis/master.conf) gives.
NODE_PORT = next(int(line.split()[1]) for line in (REPO / "ops/redis/master.conf").read_text().splitlines()
                 if line.startswith("port "))

needs_compose = pytest.mark.skipif(not shutil.which("docker-compose"),
                                   reason="docker-compose not installed")


def _config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {k: v for k, v in os.environ.items()
            if k not in ("AUTH_MODE", "JWT_SECRET", "ALLOWED_ORIGINS", "HTTP_PORT")}
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), "--env-file", str(empty),
                           "config"], cwd=tmp_path, env=dict(base, **env),
                          capture_output=True, text=True, timeout=scaled(60))


@pytest.fixture
def services(tmp_path: Path) -> dict[str, dict[str, object]]:
    run = _config(tmp_path, OPERATOR_ENV)
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)["services"]  # type: ignore[no-any-return]


@needs_compose
def test_cluster_compose_topology(services: dict[str, dict[str, object]]) -> None:
    assert {*NODES, "redis-cluster-create", "app1", "app2", "app3", "nginx"} <= set(services)
    for name in NODES:
        cmd = str(services[name]["command"])
        assert "--cluster-enabled yes" in cmd and f"--cluster-announce-hostname {name}" in cmd
        assert "/data/nodes.conf" in cmd
    create = " ".join(services["redis-cluster-create"]["command"])  # type: ignore[arg-type]
    assert "--cluster create" in create and "--cluster-replicas 1" in create
    assert services["redis-cluster-create"]["restart"] == "no"
    for app in ("app1", "app2", "app3"):
        env = services[app]["environment"]
        assert env["REDIS_CLUSTER_NODES"] == ",".join(f"{n}:{NODE_PORT}" for n in NODES)  # type: ignore[index]
        assert env["DURABILITY"] == "replica"  # type: ignore[index]
        assert "REDIS_SENTINELS" not in env  # type: ignore[operator]
        assert env["AUTH_MODE"] == "jwt" and env["JWT_SECRET"] == OPERATOR_ENV["JWT_SECRET"]  # type: ignore[index]
        assert services[app]["depends_on"]["redis-cluster-create"]["condition"] == \
            "service_completed_successfully"  # type: ignore[index]


@needs_compose
@pytest.mark.parametrize("missing", ["JWT_SECRET", "ALLOWED_ORIGINS"])
def test_cluster_compose_needs_the_operators_settings(tmp_path: Path, missing: str) -> None:
    run = _config(tmp_path, {k: v for k, v in OPERATOR_ENV.items() if k != missing})
    assert run.returncode != 0
    assert f"set {missing} in .env" in run.stderr


@pytest.fixture
def started() -> Iterator[list[Proc]]:
    ps: list[Proc] = []
    yield ps
    assert procs.stop_all(ps, timeout=scaled(10)) == []


@needs_compose
@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_cluster_node_command_runs(services: dict[str, dict[str, object]], tmp_path: Path,
                                   started: list[Proc]) -> None:
    args = shlex.split(str(services["redis-1"]["command"]))
    assert args[:2] == ["redis-server", "/etc/streamgate/redis.conf"]
    (port,) = cluster_ports(1)  # its cluster bus (+10000) must be free too
    local = {"--bind": "127.0.0.1", "--dir": str(tmp_path),
             "--cluster-config-file": str(tmp_path / "nodes.conf")}
    flags = [local.get(prev, a) for prev, a in zip(["", *args], args)]
    cmd = ["redis-server", str(REPO / "ops/redis/master.conf"), *flags[2:],
           "--port", str(port), "--appendonly", "no", "--logfile", ""]
    p = procs.spawn("compose-node", "redis", cmd, port, tmp_path / "redis.log")
    started.append(procs.started_or_stopped(p, scaled(10)))
    with probes.client(port) as r:
        assert r.config_get("cluster-announce-hostname")["cluster-announce-hostname"] == "redis-1"
        assert r.config_get("cluster-node-timeout")["cluster-node-timeout"] == "5000"
        assert r.info("cluster")["cluster_enabled"] == 1
