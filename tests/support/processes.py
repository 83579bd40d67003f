"""Stopping the processes a test started: always by pid, never by name."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from ops.local.procs import log_tail

from .timeouts import scaled


def terminate(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    """SIGTERM `proc`, then SIGKILL it if it is still alive after `grace` seconds."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=scaled(grace))
    except subprocess.TimeoutExpired:
        return kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGKILL `proc` and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    try:
        return proc.wait(timeout=scaled(10))
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
        return None


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process, from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a log file, or a note when there is none."""
    return log_tail(path, lines)
