"""A machine without the optional programs: their tests skip, nothing is left.

The tests that need nginx, redis-sentinel, chromium, promtool,
docker-compose, nft or node are run by a pytest of their own, on a PATH made
of links to every program of this machine except those. Each must pass or
skip naming what is missing (never error), and no process whose command line
or working directory lies in that run's temporary directory may outlive it.
``scripts/system-deps.sh --check`` on the same PATH says in one line what to
install.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.timeouts import scaled

REPO_ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = ("nginx", "redis-sentinel", "chromium", "chromedriver", "promtool", "amtool",
            "docker-compose", "nft", "node", "npm")
PACKAGES = ("nginx", "redis-sentinel", "chromium", "chromium-driver", "prometheus",
            "prometheus-alertmanager", "docker-compose", "nftables", "nodejs")
# The tests that start those programs (or a Sentinel topology).
SELECTION = (
    "tests/failover",
    "tests/test_cluster.py",
    "tests/test_drill.py",
    "tests/test_promtool.py",
    "tests/test_ops_configs.py",
    "tests/browser",
    "tests/test_fixture_cleanup.py",
    "tests/test_nginx_safety.py",
)

pytestmark = pytest.mark.timeout(300)


def _path_without(root: Path, left_out: tuple[str, ...]) -> str:
    """One directory of links to every program on PATH except ``left_out``."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for entry in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        if not entry or not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            target = Path(entry) / name
            link = bin_dir / name
            if name in left_out or os.path.lexists(link):
                continue
            if target.is_file() and os.access(target, os.X_OK):
                link.symlink_to(target)
    return str(bin_dir)


def _processes_under(root: Path) -> list[str]:
    """Live processes whose arguments or working directory mention ``root``."""
    found = []
    marker = str(root).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone, or not ours to read
            continue
        if marker in args or cwd.startswith(str(root)):
            shown = args.replace(b"\0", b" ").decode(errors="replace")[:200]
            found.append(f"{pid}: {shown}")
    return found


def test_missing_programs_skip_with_the_reason_and_leave_nothing_running(tmp_path: Path) -> None:
    path = _path_without(tmp_path, LEFT_OUT)
    basetemp = tmp_path / "run"
    env = dict(os.environ, PATH=path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         f"--basetemp={basetemp}", *SELECTION],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=scaled(280),
    )
    out = done.stdout + done.stderr
    leftover = _processes_under(basetemp)
    assert leftover == [], "processes left running:\n" + "\n".join(leftover)
    assert done.returncode == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    assert " error" not in summary and "failed" not in summary, summary
    skipped = int(re.search(r"(\d+) skipped", summary).group(1))  # type: ignore[union-attr]
    assert skipped >= 10, summary
    reasons = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    # (chromium is not asserted: the browser fixture also looks for it at
    # /usr/bin/chromium, off PATH, and runs it when it is there.)
    for name in ("nginx", "redis-sentinel", "promtool", "docker-compose", "node"):
        assert any(name in line for line in reasons), f"no skip names {name}:\n" + "\n".join(reasons)


def test_system_deps_check_says_in_one_line_what_to_install(tmp_path: Path) -> None:
    path = _path_without(tmp_path, LEFT_OUT)
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "system-deps.sh"), "--check"],
        env=dict(os.environ, PATH=path), capture_output=True, text=True, timeout=scaled(30),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    for package in PACKAGES:
        assert package in lines[0].split(), lines[0]


def test_system_deps_strict_fails_when_it_cannot_install(tmp_path: Path) -> None:
    """Without apt-get on PATH nothing can be installed: --strict fails, the
    default mode says what to install and succeeds."""
    path = _path_without(tmp_path, LEFT_OUT + ("apt-get", "sudo"))
    env = dict(os.environ, PATH=path)
    script = str(REPO_ROOT / "scripts" / "system-deps.sh")
    strict = subprocess.run(["bash", script, "--strict"], env=env, capture_output=True,
                            text=True, timeout=scaled(30))
    assert strict.returncode == 1
    assert "apt-get install" in strict.stderr
    default = subprocess.run(["bash", script], env=env, capture_output=True, text=True,
                             timeout=scaled(30))
    assert default.returncode == 0
    assert len(default.stderr.strip().splitlines()) == 1, default.stderr
