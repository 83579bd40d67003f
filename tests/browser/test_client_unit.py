"""The browser SDK's unit tests (client/js/test/unit.test.mjs), run by node's test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.timeouts import scaled

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
STATIC = REPO_ROOT / "app" / "static"
SDK = REPO_ROOT / "client" / "js"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    return node


def test_static_scripts_parse() -> None:
    node = _node()
    for script in [*sorted(STATIC.glob("*.js")), SDK / "streamgate.js"]:
        done = subprocess.run([node, "--check", str(script)], capture_output=True, text=True,
                              timeout=scaled(30))
        assert done.returncode == 0, f"{script.name}:\n{done.stderr}"


def test_client_unit_tests_pass() -> None:
    node = _node()
    done = subprocess.run([node, "--test", str(SDK / "test" / "unit.test.mjs")],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=scaled(60))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
