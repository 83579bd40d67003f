"""Driving ``python -m ops.cluster`` as a user does, for the Sentinel and the
Redis Cluster launcher tests alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ops.local import cluster, procs

from .timeouts import scaled


def run_ops_cluster(state_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One ``ops.cluster`` command against ``state_dir`` (development auth)."""
    env = dict(os.environ, AUTH_MODE="none")
    env.pop("JWT_SECRET", None)
    return subprocess.run(
        [sys.executable, "-m", "ops.cluster", "--state-dir", str(state_dir), *args],
        cwd=procs.REPO_ROOT, env=env, capture_output=True, text=True, timeout=scaled(timeout),
    )


def stop_recorded(state_dir: Path) -> None:
    """Safety net after a test: stop whatever the state still records, by pid;
    fail if anything outlives it."""
    left = procs.stop_all(cluster.recorded(cluster.load_state(state_dir)), timeout=scaled(10))
    assert left == [], f"processes left running: {left}"
