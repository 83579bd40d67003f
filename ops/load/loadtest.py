"""``python -m ops.load.loadtest``: fan-out load against streamgate instances.

Opens N subscriber sockets spread over one or more instance URLs (or one
nginx URL) and R rooms (each socket in one room, or in ``--rooms-per-socket``
of them), then P publisher sockets send stamped messages, round-robin over
the rooms, at a target rate (a list of steps, the first one optionally ramped), verifies every
delivery by id (loss, duplicates, order, id integrity) and measures
publish-to-delivery latency on the host's CLOCK_MONOTONIC. While it runs it
prints one progress line per second; at the end it writes a JSON result and
a PNG chart (latency percentiles, throughput and CPU over time).

The subscribers live in ``--procs`` worker processes (``multiprocessing``,
spawn); publishers, the schedule and the progress run here. Given the
servers' pids (``--server-pid``) it reads their CPU seconds and RSS from
/proc, and reports deliveries per server CPU-second and KiB per connection.
It also measures itself: when the generator's own CPU nears a full core the
report says ``generator.saturated`` and its latencies are not to be trusted.

Example (two instances, AUTH_MODE=none, publish rate limit raised)::

    python -m ops.load.loadtest --url http://127.0.0.1:8001 --url http://127.0.0.1:8002 \\
        --subscribers 1000 --steps 10,20,50 --step-seconds 10 \\
        --server-pid 1234 --server-pid 1235 --out bench/results/run.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ops.load.client import HAVE_PICOWS, raise_nofile, use_uvloop
from ops.load.run import LoadConfig, Run, fmt_ms

__all__ = ["LoadConfig", "RESULTS_DIR", "main", "run", "summary_lines", "write_outputs"]

REPO_ROOT = Path(__file__).resolve().parents[2]
# Beside the sources in a checkout; under the working directory when ops/ is
# an installed package (never inside site-packages).
RESULTS_DIR = (REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path()) / "bench" / "results"


def write_outputs(report: dict[str, Any], out: str | Path, chart: bool = True) -> dict[str, str]:
    """Write ``out`` (JSON) and, when matplotlib is there, the PNG beside it."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {"json": str(path)}
    if chart:
        try:
            from ops.load.chart import draw

            png = path.with_suffix(".png")
            draw(report, png)
            files["png"] = str(png)
        except ImportError:
            files["png_skipped"] = "matplotlib not installed (pip install -e '.[bench]')"
    report["files"] = files
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return files


def run(cfg: LoadConfig) -> dict[str, Any]:
    """Run one load test in this process (and its workers); return the report."""
    if cfg.client == "picows" and not HAVE_PICOWS:
        raise SystemExit("picows is not installed: pip install -e '.[bench]' or --client websockets")
    if cfg.cpus:
        os.sched_setaffinity(0, set(cfg.cpus))  # workers inherit it
    raise_nofile()
    use_uvloop()
    report = asyncio.run(Run(cfg).execute())
    if cfg.out:
        write_outputs(report, cfg.out, cfg.chart)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    t = report["totals"]
    g = report["generator"]
    lines = [
        f"verified: {t['delivered']:,}/{t['expected']:,} delivered, lost {t['lost']}, "
        f"duplicates {t['duplicates']}, disorder {t['disorder']}, id mismatch {t['id_mismatch']}, "
        f"closed subscribers {t['subscribers_closed']} -> {'OK' if report['ok'] else 'PROBLEMS'}",
        f"latency all: p50 {fmt_ms(t['latency_ms']['p50'])} p90 {fmt_ms(t['latency_ms']['p90'])} "
        f"p99 {fmt_ms(t['latency_ms']['p99'])} max {fmt_ms(t['latency_ms']['max'])}",
    ]
    for r in report["steps"]:
        lat = r["latency_ms"]
        lines.append(
            f"step {r['index']}: {r['rate']:g} msg/s -> {r['deliveries_per_s'] or 0:,.0f} deliv/s, "
            f"{(r['delivered_ratio'] or 0) * 100:.3f}% delivered, p50 {fmt_ms(lat['p50'])} "
            f"p99 {fmt_ms(lat['p99'])} max {fmt_ms(lat['max'])}, server CPU "
            f"{(r['server_cpu_util'] or 0):.0%}, {r['deliveries_per_server_cpu_s'] or '-'} "
            f"deliv/server-CPU-s, gen CPU {(r['generator_cpu_util'] or 0):.0%} "
            f"{'PASS' if r['pass'] else 'fail'}")
    h = report["headline"]
    lines.append("headline: " + (f"{h['deliveries_per_s']:,.0f} deliveries/s (step {h['step']}, "
                                 f"{h['rate']:g} msg/s), p99 {fmt_ms(h['p99_ms'])}"
                                 if h else "no step passed"))
    if report["deliveries_per_server_cpu_s"] is not None:
        lines.append(f"server: {report['deliveries_per_server_cpu_s']:,} deliveries per CPU-second, "
                     f"{report['server_kib_per_connection']} KiB RSS per connection")
    lines.append(f"generator: {g['utilization']:.0%} of a core, {g['cpu_us_per_delivery']} µs CPU "
                 f"per delivery{' (SATURATED: latencies suspect)' if g['saturated'] else ''}")
    if "files" in report:
        lines.append("wrote " + ", ".join(report["files"].values()))
    return lines


def parse_args(argv: Sequence[str] | None = None) -> LoadConfig:
    ap = argparse.ArgumentParser(prog="python -m ops.load.loadtest", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", action="append", required=True,
                    help="instance or nginx base URL, http://host:port (repeat to spread)")
    ap.add_argument("--token", help="a JWT for AUTH_MODE=jwt (default: ?user=, AUTH_MODE=none)")
    ap.add_argument("--subscribers", "-n", type=int, default=100)
    ap.add_argument("--rooms", "-r", type=int, default=1)
    ap.add_argument("--rooms-per-socket", type=int, default=1,
                    help="each subscriber socket joins this many rooms (drawn at random)")
    ap.add_argument("--publishers", "-p", type=int, default=1,
                    help="publisher sockets (messages go round-robin over the rooms)")
    ap.add_argument("--rate", type=float, help="one step at this rate (messages/s, all publishers)")
    ap.add_argument("--steps", help="comma list of rates, one step each, e.g. 10,20,50")
    ap.add_argument("--step-seconds", "--duration", dest="step_seconds", type=float, default=10.0)
    ap.add_argument("--ramp", type=float, default=0.0, help="seconds to ramp up to the first rate")
    ap.add_argument("--procs", type=int, default=1, help="subscriber processes")
    ap.add_argument("--client", choices=("picows", "websockets"), default="picows")
    ap.add_argument("--concurrency", type=int, default=200, help="handshakes in flight per process")
    ap.add_argument("--pad", type=int, default=0, help="extra body bytes per message")
    ap.add_argument("--server-pid", type=int, action="append", default=[])
    ap.add_argument("--watch-pid", type=int, action="append", default=[],
                    help="another pid whose CPU to report (e.g. Redis)")
    ap.add_argument("--redis-url", help="report this Redis's INFO commandstats per step "
                    "(resets its stats: CONFIG RESETSTAT)")
    ap.add_argument("--idle-seconds", type=float, default=0.0,
                    help="measure CPU this long with everyone joined, before publishing")
    ap.add_argument("--cpus", help="pin the generator to these cores, e.g. 1 or 1,2")
    ap.add_argument("--stop-on-fail", action="store_true",
                    help="stop stepping after a step whose p99 exceeds --abort-p99-ms")
    ap.add_argument("--min-delivered", type=float, default=0.999)
    ap.add_argument("--max-p99-ms", type=float, default=100.0)
    ap.add_argument("--abort-p99-ms", type=float, default=2000.0)
    ap.add_argument("--out", help="JSON result path (PNG beside it); default bench/results/…")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--label", default="")
    ap.add_argument("--quiet", "-q", action="store_true")
    a = ap.parse_args(argv)
    if a.steps:
        steps = [float(x) for x in a.steps.split(",") if x.strip()]
    else:
        steps = [a.rate if a.rate is not None else 100.0]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return LoadConfig(
        urls=a.url, token=a.token, subscribers=a.subscribers, rooms=a.rooms,
        rooms_per_socket=a.rooms_per_socket, publishers=a.publishers,
        redis_url=a.redis_url, idle_seconds=a.idle_seconds, steps=steps, step_seconds=a.step_seconds, ramp_seconds=a.ramp,
        procs=a.procs, client=a.client, concurrency=a.concurrency, pad=a.pad,
        server_pids=a.server_pid, watch_pids=a.watch_pid,
        cpus=[int(c) for c in a.cpus.split(",")] if a.cpus else None,
        stop_on_fail=a.stop_on_fail, min_delivered=a.min_delivered, max_p99_ms=a.max_p99_ms,
        abort_p99_ms=a.abort_p99_ms, out=a.out or str(RESULTS_DIR / f"loadtest-{stamp}.json"),
        chart=not a.no_chart, label=a.label, quiet=a.quiet,
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    report = run(cfg)
    for line in summary_lines(report):
        print(line)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
