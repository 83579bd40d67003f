"""What build is running: the version and, where known, the git commit.

Read once per process for ``streamgate_build_info``, so a dashboard can tell
which instances a deploy has reached. The commit comes from the source
checkout the package runs from (``git rev-parse``, bounded to two seconds);
an installed wheel or a container image has none, so its build passes the
commit in ``BUILD_SHA`` instead; with neither, it says ``unknown``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    git_sha: str


def build_info(build_sha: str | None = None) -> BuildInfo:
    """``build_sha`` (the BUILD_SHA setting) wins over asking git."""
    return BuildInfo(_version(), build_sha or _git_sha(SOURCE_ROOT))


def _version() -> str:
    try:
        return metadata.version("streamgate")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def _git_sha(root: Path) -> str:
    if not (root / ".git").exists():  # a worktree's .git is a file
        return UNKNOWN
    try:
        run = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=2.0, check=False)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    sha = run.stdout.strip()
    return sha if run.returncode == 0 and sha else UNKNOWN
