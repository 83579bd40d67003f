"""The browser SDK's own tests (client/js/test/), run by node's test runner:
the unit tests against a scripted socket, the live ones against a real
instance, and both again from the tarball ``npm pack`` makes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support import Instance
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


def test_chat_body_rendering_unit_tests_pass() -> None:
    """render.js: the function the demo page renders every body with."""
    node = _node()
    done = subprocess.run([node, "--test", str(HERE / "render.test.mjs")],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=scaled(60))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def _node_args(node: str) -> list[str]:
    """Node 22 has a global WebSocket; Node 20 needs the flag for the live tests."""
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major = int(version.lstrip("v").split(".")[0])
    if major < 20:
        pytest.skip(f"node {major} is too old for the live tests (needs >= 20)")
    return [node, "--experimental-websocket"] if major < 22 else [node]


def _run_node_tests(args: list[str], cwd: Path, url: str) -> str:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env["STREAMGATE_URL"] = url
    done = subprocess.run([*args, "--test", "test/"], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=scaled(120))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return done.stdout


def _counts(report: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^# (pass|fail|skipped|todo) (\d+)$", report, re.M)}


def test_live_tests_pass_against_an_instance(inst_a: Instance) -> None:
    args = _node_args(_node())
    counts = _counts(_run_node_tests(args, SDK, inst_a.ws_url()))
    assert counts["fail"] == 0 and counts["skipped"] == 0 and counts["pass"] >= 3, counts


def test_the_npm_package_carries_its_tests_and_they_pass(inst_a: Instance, tmp_path: Path) -> None:
    args = _node_args(_node())
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    env = {**os.environ, "npm_config_cache": str(tmp_path / "cache")}  # leaves the user's cache alone
    packed = subprocess.run([npm, "pack", "--pack-destination", str(tmp_path)], cwd=SDK, capture_output=True,
                            text=True, timeout=scaled(120), env=env)
    assert packed.returncode == 0, packed.stderr[-3000:]
    (tarball,) = tmp_path.glob("streamgate-client-*.tgz")
    with tarfile.open(tarball) as tar:
        names = sorted(n.removeprefix("package/") for n in tar.getnames())
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert names == ["README.md", "package.json", "streamgate.d.ts", "streamgate.js",
                     "test/live.test.mjs", "test/unit.test.mjs"], names
    counts = _counts(_run_node_tests(args, tmp_path / "unpacked" / "package", inst_a.ws_url()))
    assert counts["fail"] == 0 and counts["skipped"] == 0 and counts["pass"] >= 3, counts
