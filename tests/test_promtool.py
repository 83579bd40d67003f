"""Prometheus rules and the Grafana dashboard: valid, tested, and about real metrics.

`promtool` checks the scrape config, the rules and their unit tests. Every
PromQL expression of the alerts and of the dashboard must name only metrics
that a live instance actually exposes on /metrics, so a renamed metric breaks
this test instead of silently emptying a panel or muting an alert.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import Instance, scaled
from tests.support.instance import REPO_ROOT
from tests.test_metrics import EXPECTED_METRICS, scrape

PROMETHEUS = REPO_ROOT / "ops" / "prometheus"
GRAFANA = REPO_ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "streamgate.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "streamgate.yml"

needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")

METRIC_RE = re.compile(r"\b(?:streamgate|websocket|process|python)_[a-z0-9_]+\b")
# Series Prometheus makes itself rather than scraping them.
SYNTHETIC = {"up"}
# redis_exporter's series (job "redis", see ops/prometheus/prometheus.yml):
# no live exporter here, so the names used are pinned to its documented ones.
REDIS_RE = re.compile(r"\bredis_[a-z0-9_]+\b")
REDIS_EXPORTER_METRICS = {
    "redis_up", "redis_memory_used_bytes", "redis_memory_max_bytes",
    "redis_total_system_memory_bytes", "redis_connected_slaves",
    "redis_connected_slave_lag_seconds",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=scaled(60))


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, rows included."""
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard()["panels"])
    return out


def as_plain_promql(expr: str) -> str:
    """Replace Grafana's variables by values PromQL accepts."""
    return (expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
            .replace("$__interval", "1m").replace("$instance", ".*"))


# -- promtool --------------------------------------------------------------------------


@needs_promtool
def test_prometheus_config_is_valid_and_loads_the_alert_rules() -> None:
    run = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "alerts.yml" in out
    assert f"SUCCESS: {len(alert_rules())} rules found" in out, out


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    run = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_alert_rule_unit_tests_pass() -> None:
    run = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    doc = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    required = {"InstanceDown", "StreamgateRedisUnreachable", "StreamgateRedisFailover",
                "StreamgatePublishLatencyHigh", "StreamgateSlowConsumerClosesSpiking",
                "StreamgateUnavailableAnswers", "StreamgatePubSubCanaryMissed",
                "StreamgateNotReady", "StreamgateDrainStuck", "StreamgateUnrecoveredJoins",
                "StreamgateHTTPServerErrors", "StreamgateFileDescriptorsNearLimit",
                "RedisDown", "RedisReplicationLagHigh", "RedisMemoryHigh"}
    assert required <= set(names)
    assert not set(names) - firing, f"alerts never shown firing: {sorted(set(names) - firing)}"
    assert not set(names) - silent, f"alerts never shown silent: {sorted(set(names) - silent)}"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("page", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


@needs_promtool
def test_dashboard_exprs_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no expression checker; recording rules get the full parse."""
    rules = [{"record": f"dashboard:expr_{n}", "expr": as_plain_promql(expr)}
             for n, (_, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = promtool("check", "rules", str(path))
    assert run.returncode == 0, run.stdout + run.stderr


# -- real metric names -------------------------------------------------------------------


async def test_alerts_and_dashboard_use_only_metrics_a_live_instance_exposes(inst_a: Instance) -> None:
    exposed = (await scrape(inst_a)).exposed_names() | SYNTHETIC
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        used.setdefault(rule["expr"], set()).add(f"alert {rule['alert']}")
    for title, expr in dashboard_exprs():
        used.setdefault(expr, set()).add(f"panel {title!r}")
    unknown = []
    for expr, where in used.items():
        if 'job="redis"' in expr:
            names = set(REDIS_RE.findall(expr))
            assert names, f"{sorted(where)}: no metric in {expr!r}"
            unknown += [f"{sorted(where)}: {n}" for n in sorted(names - REDIS_EXPORTER_METRICS)]
            continue
        names = set(METRIC_RE.findall(expr)) | ({"up"} if re.search(r"\bup\{", expr) else set())
        assert names, f"{sorted(where)}: no metric in {expr!r}"
        unknown += [f"{sorted(where)}: {name}" for name in sorted(names - exposed)]
    assert not unknown, "expressions name metrics the instance does not expose:\n  " + "\n  ".join(unknown)


# -- Grafana -------------------------------------------------------------------------------


def test_dashboard_covers_the_service() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    text = " ".join(expr for _, expr in dashboard_exprs())
    for metric in ("websocket_connections", "websocket_messages_received_total",
                   "websocket_messages_sent_total", "streamgate_publish_latency_seconds_bucket",
                   "streamgate_delivery_latency_seconds_bucket", "streamgate_replayed_messages_total",
                   "streamgate_gap_filled_messages_total", "streamgate_redis_failovers_total",
                   "streamgate_pubsub_reconnects_total", "streamgate_unavailable_total",
                   "streamgate_outbound_queue_depth"):
        assert metric in text, f"no panel shows {metric}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(streamgate_publish_latency_seconds_bucket" in text
        assert f"histogram_quantile({quantile}, sum by (le) (rate(streamgate_delivery_latency_seconds_bucket" in text
    # Every metric of the service is on some panel, and so is the process.
    missing = [m for m in EXPECTED_METRICS if m not in text]
    assert not missing, f"metrics on no panel: {missing}"
    for metric in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                   "redis_memory_used_bytes", "redis_connected_slave_lag_seconds"):
        assert metric in text, f"no panel shows {metric}"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert "instance" in variables
    for title, expr in dashboard_exprs():
        if 'job="redis"' in expr:  # Redis nodes, not streamgate instances
            continue
        assert 'instance=~"$instance"' in expr, f"panel {title!r} ignores the instance selector"


def test_grafana_provisioning_points_at_the_dashboard_datasource() -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())
    assert datasources["apiVersion"] == 1
    (prom,) = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    uids = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict):
                uids.add((ds.get("type"), ds.get("uid")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard())
    assert uids == {("prometheus", prom["uid"])}, uids
    providers = yaml.safe_load(PROVIDERS.read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
