"""``python -m app`` refuses a setting that cannot work with one line on
stderr and exit status 2, before it binds anything or talks to Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("name", "value"), [("LOG_FORMAT", "xml"), ("PORT", "99999"),
                                             ("PUBLISH_RATE", "-5"), ("MAX_CONNECTIONS", "-1")])
def test_an_impossible_setting_is_one_line_and_exit_2(name: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_SENTINELS")}
    env.update({"AUTH_MODE": "none", name: value, "PYTHONPATH": str(REPO_ROOT)})
    done = subprocess.run([sys.executable, "-m", "app"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamgate: ") and name in lines[0], done.stderr
