"""The load-test chart: latency percentiles, throughput and CPU over time.

Needs matplotlib (the ``bench`` extra); importing this module without it
raises ImportError, which the caller turns into a note in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def draw(report: dict[str, Any], path: Path) -> None:
    tl = report["timeline"]
    t = [r["t"] for r in tl]
    fig, (ax_lat, ax_rate, ax_cpu) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    title = report.get("label") or "streamgate load test"
    h = report.get("headline")
    if h:
        title += f"\nbest passing step {h['deliveries_per_s']:,.0f} deliveries/s, p99 {h['p99_ms']:.1f} ms"
    fig.suptitle(title, fontsize=11)

    for key, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", "-"), ("max_ms", ":")):
        ys = [r.get(key) for r in tl]
        ax_lat.plot(t, [y if y is not None else float("nan") for y in ys], style,
                    label=key.replace("_ms", ""))
    ax_lat.axhline(report["criteria"]["max_p99_ms"], color="red", linewidth=0.8, alpha=0.6,
                   label=f"p99 limit {report['criteria']['max_p99_ms']:g} ms")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("publish → delivery (ms)")
    ax_lat.legend(loc="upper left", fontsize=8)
    ax_lat.grid(True, which="both", alpha=0.3)

    subs = report["subscribers"]["joined"] or 1
    ax_rate.plot(t, [r["delivered"] for r in tl], label="deliveries/s")
    ax_rate.plot(t, [r["published"] * subs / max(1, report["config"]["rooms"]) for r in tl], "--",
                 label="offered (published/s × subscribers per room)")
    ax_rate.set_ylabel("per second")
    ax_rate.legend(loc="upper left", fontsize=8)
    ax_rate.grid(True, alpha=0.3)

    for key, label in (("server_cpu", "servers"), ("generator_cpu", "generator"),
                       ("watched_cpu", "redis / watched")):
        ys = [r.get(key) for r in tl]
        if any(y for y in ys):
            ax_cpu.plot(t, [100 * y if y is not None else float("nan") for y in ys], label=label)
    ax_cpu.set_ylabel("CPU (% of one core)")
    ax_cpu.set_xlabel("seconds since publishing started")
    ax_cpu.legend(loc="upper left", fontsize=8)
    ax_cpu.grid(True, alpha=0.3)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
