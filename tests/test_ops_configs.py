"""The deployment files under ops/ and docker-compose.sentinel.yml are valid.

Each file is checked by the program that will read it (docker-compose,
nginx -t, redis-server, redis-sentinel, promtool), started on free loopback
ports in a temporary directory, never against the shared Redis on the standard port.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from ops.local import probes, procs, render
from ops.local.procs import Proc
from tests.support.timeouts import scaled

REPO = procs.REPO_ROOT
COMPOSE = REPO / "docker-compose.sentinel.yml"
COMPOSE_PRODUCTION = REPO / "docker-compose.production.yml"
SENTINEL_PRODUCTION = REPO / "ops" / "sentinel" / "sentinel-production.conf"

needs_redis = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-sentinel")),
    reason="redis-server / redis-sentinel not installed",
)
needs_nginx = pytest.mark.skipif(not shutil.which("nginx"), reason="nginx not installed")


@pytest.fixture
def started() -> Iterator[list[Proc]]:
    """Processes a test starts; each is stopped by its pid afterwards."""
    ps: list[Proc] = []
    yield ps
    assert procs.stop_all(ps, timeout=scaled(10)) == []


def _conf_values(path: Path) -> dict[str, str]:
    """Directive -> value of a redis.conf (the last occurrence wins, as in Redis)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            if key != "client-output-buffer-limit":
                values[key] = value
    return values


# --- docker-compose -----------------------------------------------------------------


needs_compose = pytest.mark.skipif(not shutil.which("docker-compose"),
                                   reason="docker-compose not installed")
OPERATOR_ENV = {"JWT_SECRET": "s" * 32, "ALLOWED_ORIGINS": "https://chat.example.com"}


def _compose_config(tmp_path: Path, env: dict[str, str], *args: str,
                    files: tuple[Path, ...] = (COMPOSE,)) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with exactly ``env`` as the operator's settings:
    none inherited from this process, an empty env file instead of a .env."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {k: v for k, v in os.environ.items()
            if k not in ("AUTH_MODE", "JWT_SECRET", "ALLOWED_ORIGINS", "HTTP_PORT")}
    named = [arg for f in files for arg in ("-f", str(f))]
    return subprocess.run(["docker-compose", *named, "--env-file", str(empty), "config", *args],
                          cwd=tmp_path, env=dict(base, **env),
                          capture_output=True, text=True, timeout=scaled(60))


@needs_compose
def test_compose_file_is_valid(tmp_path: Path) -> None:
    run = _compose_config(tmp_path, OPERATOR_ENV, "--services")
    assert run.returncode == 0, run.stderr
    services = set(run.stdout.split())
    assert {"redis-master", "redis-replica", "sentinel1", "sentinel2", "sentinel3",
            "app1", "app2", "app3", "nginx", "prometheus", "redis-exporter", "alertmanager",
            "grafana"} <= services
    text = COMPOSE.read_text()
    for used in ("ops/redis/master.conf", "ops/redis/replica.conf", "ops/sentinel/sentinel.conf",
                 "ops/nginx/streamgate.conf", "ops/prometheus/prometheus.yml"):
        assert used in text
    assert "DURABILITY: replica" in text
    assert "REDIS_SENTINELS: sentinel1:26379,sentinel2:26379,sentinel3:26379" in text


@needs_compose
@pytest.mark.parametrize("missing", ["JWT_SECRET", "ALLOWED_ORIGINS"])
def test_compose_refuses_to_start_without_the_operators_settings(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in OPERATOR_ENV.items() if k != missing}
    run = _compose_config(tmp_path, env)
    assert run.returncode != 0
    assert f"set {missing} in .env" in run.stderr


@needs_compose
def test_compose_runs_jwt_with_explicit_origins(tmp_path: Path) -> None:
    run = _compose_config(tmp_path, OPERATOR_ENV)
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    for name in ("app1", "app2", "app3"):
        env = services[name]["environment"]
        assert env["AUTH_MODE"] == "jwt"
        assert env["JWT_SECRET"] == OPERATOR_ENV["JWT_SECRET"]
        assert env["ALLOWED_ORIGINS"] == "https://chat.example.com"
    example = (REPO / ".env.example").read_text()
    assert "JWT_SECRET=" in example and "ALLOWED_ORIGINS=" in example


def test_compose_wires_redis_exporter_and_alertmanager_into_prometheus() -> None:
    """Every address Prometheus scrapes or alerts to is a compose service, and
    the files the new services mount exist."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    prom = yaml.safe_load((REPO / "ops" / "prometheus" / "prometheus.yml").read_text())
    alertmanagers = [t for am in prom["alerting"]["alertmanagers"]
                     for sc in am["static_configs"] for t in sc["targets"]]
    assert alertmanagers and all(t.split(":")[0] in services for t in alertmanagers)
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    redis_job = jobs["redis"]
    (exporter,) = [r["replacement"] for r in redis_job["relabel_configs"]
                   if r.get("target_label") == "__address__"]
    assert exporter.split(":")[0] in services
    assert "oliver006/redis_exporter" in services[exporter.split(":")[0]]["image"]
    nodes = [t for sc in redis_job["static_configs"] for t in sc["targets"]]
    assert {urlsplit(t).hostname for t in nodes} == {
        name for name in services if name.startswith("redis-") and name != "redis-exporter"}
    for name in ("alertmanager", "prometheus", "redis-exporter"):
        for volume in services[name].get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert "./ops/alertmanager/alertmanager.yml" in " ".join(services["alertmanager"]["volumes"])


@needs_compose
def test_production_override_swaps_in_the_production_sentinel_timings(tmp_path: Path) -> None:
    run = _compose_config(tmp_path, OPERATOR_ENV, files=(COMPOSE, COMPOSE_PRODUCTION))
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    for name in ("sentinel1", "sentinel2", "sentinel3"):
        mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}"
                  for v in services[name]["volumes"]]
        confs = [m for m in mounts if "/etc/streamgate/sentinel.conf" in m]
        assert len(confs) == 1 and "sentinel-production.conf" in confs[0], (name, mounts)


def _directives(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_production_sentinel_profile_differs_only_in_its_timings() -> None:
    loopback = _directives(render.SENTINEL_CONF)
    production = _directives(SENTINEL_PRODUCTION)
    changed = {(a, b) for a, b in zip(loopback, production) if a != b}
    assert len(loopback) == len(production)
    assert changed == {
        ("sentinel down-after-milliseconds mymaster 1000", "sentinel down-after-milliseconds mymaster 5000"),
        ("sentinel failover-timeout mymaster 10000", "sentinel failover-timeout mymaster 60000"),
    }


@pytest.mark.skipif(not shutil.which("amtool"), reason="amtool (prometheus-alertmanager) not installed")
def test_alertmanager_config_is_valid() -> None:
    run = subprocess.run(["amtool", "check-config", str(REPO / "ops" / "alertmanager" / "alertmanager.yml")],
                         capture_output=True, text=True, timeout=scaled(30))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 receivers" in run.stdout


def test_dockerfile_runs_the_app_module() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert 'CMD ["python", "-m", "app"]' in text


# --- ports ---------------------------------------------------------------------------


def test_free_ports_are_distinct_across_calls_and_never_reserved() -> None:
    first, second = procs.free_ports(20), procs.free_ports(20)
    assert len(set(first) | set(second)) == 40
    assert not (set(first) | set(second)) & procs.RESERVED_PORTS
    low = procs._ephemeral_range()[0]
    assert all(20000 <= p < low for p in first + second)


# --- rendering (pure) ---------------------------------------------------------------


def test_sentinel_template_renders_for_a_local_master() -> None:
    text = render.sentinel_conf(render.SENTINEL_CONF.read_text(), 41000)
    assert re.search(r"^sentinel monitor mymaster 127\.0\.0\.1 41000 2$", text, re.M)
    assert "redis-master" not in re.sub(r"#.*", "", text)
    renamed = render.sentinel_conf(render.SENTINEL_CONF.read_text(), 41000, master_name="other",
                                   quorum=1, down_after_ms=250, failover_timeout_ms=3000)
    assert re.search(r"^sentinel monitor other 127\.0\.0\.1 41000 1$", renamed, re.M)
    assert re.search(r"^sentinel down-after-milliseconds other 250$", renamed, re.M)
    assert re.search(r"^sentinel failover-timeout other 3000$", renamed, re.M)
    assert re.search(r"^sentinel parallel-syncs other 1$", renamed, re.M)
    with pytest.raises(render.TemplateError):
        render.sentinel_conf("port 26379\n", 41000)


def test_nginx_site_renders_upstreams_and_listen_ports() -> None:
    site = render.nginx_site(render.NGINX_SITE.read_text(), [41001, 41002], {80: 41000})
    assert "listen 127.0.0.1:41000;" in site
    assert "server 127.0.0.1:41001 max_fails=2 fail_timeout=5s;" in site
    assert "server 127.0.0.1:41002 max_fails=2 fail_timeout=5s;" in site
    assert "app1:8000" not in site
    with pytest.raises(render.TemplateError):  # every listen port must be mapped
        render.nginx_site(render.NGINX_TLS_SITE.read_text(), [41001], {80: 41000})


@pytest.mark.parametrize("template", [render.NGINX_SITE, render.NGINX_TLS_SITE],
                         ids=["http", "tls"])
def test_nginx_templates_proxy_websockets_correctly(template: Path) -> None:
    text = template.read_text()
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{\s*default upgrade;\s*''\s+close;",
                     text)
    ws = re.search(r"location = /ws \{(.*?)\n    \}", text, re.S)
    assert ws, "no /ws location"
    block = ws.group(1)
    for directive in ("proxy_set_header Upgrade           $http_upgrade;",
                      "proxy_set_header Connection        $connection_upgrade;",
                      "proxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;",
                      "proxy_set_header Host              $host;",
                      "proxy_buffering off;", "proxy_read_timeout 60s;", "proxy_send_timeout 60s;"):
        assert directive in block
    assert "X-Forwarded-Proto" in block
    assert "proxy_http_version 1.1;" in text
    assert "proxy_next_upstream error timeout;" in text
    assert "ip_hash" not in text and "sticky" not in re.sub(r"#.*", "", text)


def test_nginx_templates_share_their_proxy_rules() -> None:
    """The TLS variant differs only in TLS and X-Forwarded-Proto, not in proxying."""

    def locations(path: Path) -> str:
        text = path.read_text().replace("$scheme", "https")
        text = re.sub(r"#.*", "", text)
        blocks = re.findall(r"(location (?:= )?/(?:ws|metrics)? \{.*?\n    \})", text, re.S)
        return "\n".join(b for b in blocks if "return 301" not in b)

    assert locations(render.NGINX_SITE) == locations(render.NGINX_TLS_SITE)


# --- nginx -t -------------------------------------------------------------------------


@needs_nginx
def test_generated_cluster_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    port, *upstreams = procs.free_ports(3)
    conf = procs.write_nginx_conf(port, upstreams, tmp_path)
    run = subprocess.run(procs.nginx_cmd(conf, "-t"), capture_output=True, text=True,
                         timeout=scaled(10))
    assert run.returncode == 0, run.stderr
    assert "syntax is ok" in run.stderr
    text = conf.read_text()
    assert "daemon off;" in text
    assert "/var/log" not in text


@needs_nginx
@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_tls_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    key, cert = tmp_path / "privkey.pem", tmp_path / "fullchain.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=scaled(30))
    https, http, *upstreams = procs.free_ports(4)
    site = render.nginx_site(render.NGINX_TLS_SITE.read_text(), upstreams,
                             {443: https, 80: http})
    site = site.replace("/etc/nginx/tls/fullchain.pem", str(cert))
    site = site.replace("/etc/nginx/tls/privkey.pem", str(key))
    conf = tmp_path / "nginx.conf"
    conf.write_text(render.nginx_main(site, tmp_path))
    (tmp_path / "tmp").mkdir()
    run = subprocess.run(procs.nginx_cmd(conf, "-t"), capture_output=True, text=True,
                         timeout=scaled(10))
    assert run.returncode == 0, run.stderr


# --- Prometheus -----------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_prometheus_config_and_rules_are_valid() -> None:
    run = subprocess.run(["promtool", "check", "config",
                          str(REPO / "ops" / "prometheus" / "prometheus.yml")],
                         capture_output=True, text=True, timeout=scaled(30))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "InstanceDown" in (REPO / "ops" / "prometheus" / "alerts.yml").read_text()


# --- Redis and Sentinel ---------------------------------------------------------------


def test_master_and_replica_confs_agree_on_safety_settings() -> None:
    """Sentinel swaps the roles, so both files must hold the same guarantees."""
    master = _conf_values(render.REDIS_MASTER_CONF)
    replica = _conf_values(render.REDIS_REPLICA_CONF)
    for key in ("appendonly", "appendfsync", "min-replicas-to-write", "min-replicas-max-lag",
                "maxmemory-policy", "replica-serve-stale-data", "replica-read-only",
                "repl-backlog-size", "repl-diskless-sync-delay", "timeout", "tcp-keepalive"):
        assert master[key] == replica[key], key


@needs_redis
def test_redis_confs_load_and_refuse_writes_without_a_replica(
    tmp_path: Path, started: list[Proc]
) -> None:
    mport, rport = procs.free_ports(2)
    master = procs.start_redis(mport, tmp_path / "m", wait=scaled(10))
    started.append(master)
    probes.wait_redis(mport, scaled(10), master)
    with probes.client(mport) as r:
        cfg = r.config_get("*")
        assert cfg["appendonly"] == "yes"
        assert cfg["appendfsync"] == "everysec"
        assert cfg["min-replicas-to-write"] == "1"
        assert cfg["min-replicas-max-lag"] == "5"
        assert cfg["replica-serve-stale-data"] == "yes"
        assert cfg["maxmemory-policy"] == "noeviction"
        assert cfg["bind"] == "127.0.0.1"
        # The split-brain guard: a master without a replica refuses writes.
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            r.set("k", "v")

    replica = procs.start_redis(rport, tmp_path / "r", replicaof=mport, wait=scaled(10))
    started.append(replica)
    probes.wait_replica_link(rport, scaled(15), replica)
    with probes.client(rport) as r:
        assert r.config_get("min-replicas-to-write")["min-replicas-to-write"] == "1"
        assert r.config_get("appendonly")["appendonly"] == "yes"
    with probes.client(mport) as r:
        procs.wait_until(lambda: r.set("k", "v"), scaled(10), what="write accepted")
    assert "replicaof 127.0.0.1" in (tmp_path / "r" / "redis.conf").read_text()
    # The templates themselves are never written to.
    assert not re.search(r"^replicaof", render.REDIS_REPLICA_CONF.read_text(), re.M)


@needs_redis
@pytest.mark.slow
def test_master_refuses_writes_while_its_replica_is_frozen(
    tmp_path: Path, started: list[Proc]
) -> None:
    """min-replicas-max-lag: no acknowledgement for 5 s -> writes fail."""
    mport, rport = procs.free_ports(2)
    started.append(procs.start_redis(mport, tmp_path / "m", wait=scaled(10)))
    replica = procs.start_redis(rport, tmp_path / "r", replicaof=mport, wait=scaled(10))
    started.append(replica)
    probes.wait_replica_link(rport, scaled(15), replica)
    with probes.client(mport) as r:
        procs.wait_until(lambda: r.set("k", "v"), scaled(10), what="write accepted")
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            def refused() -> bool:
                try:
                    r.set("k", "v")
                except redis.ResponseError as e:
                    return "NOREPLICAS" in str(e)
                return False

            procs.wait_until(refused, scaled(12), interval=0.2, what="NOREPLICAS")
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        procs.wait_until(lambda: r.set("k", "v"), scaled(10), what="writes resume")


@needs_redis
def test_sentinel_conf_loads_with_the_documented_timings(
    tmp_path: Path, started: list[Proc]
) -> None:
    mport, rport, sport = procs.free_ports(3)
    master = procs.start_redis(mport, tmp_path / "m", wait=scaled(10))
    started.append(master)
    replica = procs.start_redis(rport, tmp_path / "r", replicaof=mport, wait=scaled(10))
    started.append(replica)
    probes.wait_replica_link(rport, scaled(15), replica)
    sentinel = procs.start_sentinel(sport, tmp_path / "s", mport, wait=scaled(10))
    started.append(sentinel)
    with probes.client(sport) as s:
        m = s.sentinel_master("mymaster")
    assert (m["ip"], m["port"]) == ("127.0.0.1", mport)
    assert m["quorum"] == 2
    assert m["down-after-milliseconds"] == 1000
    assert m["failover-timeout"] == 10000
    assert m["parallel-syncs"] == 1
    procs.wait_until(lambda: probes.sentinel_ready(sport, replicas=1, sentinels=1),
                     scaled(15), what="sentinel sees the replica", watch=[sentinel])
    # Sentinel rewrote its copy (its id), never the template.
    assert "sentinel myid" in (tmp_path / "s" / "sentinel.conf").read_text()
    assert "sentinel myid" not in render.SENTINEL_CONF.read_text()


@needs_redis
def test_production_sentinel_profile_loads_with_its_timings(tmp_path: Path, started: list[Proc]) -> None:
    mport, sport = procs.free_ports(2)
    master = procs.start_redis(mport, tmp_path / "m", wait=scaled(10))
    started.append(master)
    (tmp_path / "s").mkdir()
    # start_sentinel runs an existing copy as is: seed it from the production profile.
    (tmp_path / "s" / "sentinel.conf").write_text(
        render.sentinel_conf(SENTINEL_PRODUCTION.read_text(), mport))
    sentinel = procs.start_sentinel(sport, tmp_path / "s", mport, wait=scaled(10))
    started.append(sentinel)
    with probes.client(sport) as s:
        m = s.sentinel_master("mymaster")
    assert (m["ip"], m["port"], m["quorum"]) == ("127.0.0.1", mport, 2)
    assert m["down-after-milliseconds"] == 5000
    assert m["failover-timeout"] == 60000
    assert m["parallel-syncs"] == 1


@needs_redis
def test_stop_only_signals_the_recorded_process(tmp_path: Path) -> None:
    port = procs.free_port()
    p = procs.start_redis(port, tmp_path / "m", wait=scaled(10))
    assert procs.is_alive(p.pid, p.started)
    # A wrong start time stands for a recycled pid: nothing is signalled.
    assert procs.stop(p.pid, started=(p.started or 0) + 1) is True
    assert procs.is_alive(p.pid, p.started)
    assert procs.stop(p.pid, timeout=scaled(10), started=p.started) is True
    assert not procs.is_alive(p.pid)
