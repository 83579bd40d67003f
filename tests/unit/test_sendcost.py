"""The send() cost probe (ops/load/sendcost.py) that the benchmark notes quote
as the floor of a delivery: it must measure real sends and stop its reader."""

from __future__ import annotations

import json
import subprocess
import sys

from ops.local import procs


def test_sendcost_reports_a_positive_cost_per_send_and_leaves_no_child() -> None:
    done = subprocess.run([sys.executable, "-m", "ops.load.sendcost", "--sockets", "3", "--rounds", "50"],
                          capture_output=True, text=True, timeout=60, cwd=procs.REPO_ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sockets"] == 3 and result["rounds"] == 50
    assert 0 < result["cpu_us_per_send"] < 10_000
    assert abs(result["cpu_us_per_room_of_10"] - result["cpu_us_per_send"] * 10) < 0.2
    # run() returned: a reader left behind would hold the output pipe open until the timeout.
