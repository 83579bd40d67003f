"""The ``streamgate`` command: help, version, every refused setting, and a
real instance served through it.

The commands run as subprocesses of this checkout's code
(``python -m app.cli``, the function the ``streamgate`` console script
calls); tests/test_packaging.py runs the installed script itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.support import RedisServer
from tests.support.instance import REPO_ROOT, ModuleAppInstance
from tests.support.timeouts import scaled

STREAMGATE = [sys.executable, "-m", "app.cli"]
SECRET = "cli-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
VARIABLES = [str(f.validation_alias) for f in Settings.model_fields.values()]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``streamgate ARGS`` with exactly ``env`` (plus what Python needs), in
    ``cwd`` (an empty directory: no stray ``.env``)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    base["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([*STREAMGATE, *args], env={**base, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=scaled(60))


def test_help_lists_every_setting_with_its_default(tmp_path: Path) -> None:
    done = run(["--help"], {}, tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("serve", "cluster", "drill", "loadtest", "bench"):
        assert command in done.stdout
    lines = done.stdout.splitlines()
    for name in VARIABLES:
        (line,) = [ln for ln in lines if ln.split()[:1] == [name]]
        assert "[default: " in line, line
    assert any("PORT" in ln and "[default: 8000]" in ln for ln in lines)
    assert any("LOG_FORMAT" in ln and "[default: json]" in ln for ln in lines)


@pytest.mark.parametrize("entry", [["serve", "--help"], ["-m", "app", "--help"]], ids=["serve", "python-m-app"])
def test_serve_help_lists_the_settings_and_starts_nothing(entry: list[str], tmp_path: Path) -> None:
    if entry[0] == "-m":
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
        done = subprocess.run([sys.executable, *entry], env={**base, "PYTHONPATH": str(REPO_ROOT)}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=scaled(60))
    else:
        done = run(entry, {}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert all(name in done.stdout for name in VARIABLES)


def test_version(tmp_path: Path) -> None:
    done = run(["--version"], {}, tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("streamgate ") and len(done.stdout.split()) == 2


def test_an_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    done = run(["serv"], {}, tmp_path)
    assert done.returncode == 2
    assert "invalid choice" in done.stderr and "Traceback" not in done.stderr


# (environment, the variable the one line must name)
REFUSED = [
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"PUBLISH_RATE": "-5"}, "PUBLISH_RATE"),
    ({"MAX_CONNECTIONS": "-1"}, "MAX_CONNECTIONS"),
    ({"PORT": "99999"}, "PORT"),
    ({"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL"),
    ({"DURABILITY": "replica", "MIN_REPLICAS": "0"}, "MIN_REPLICAS"),
    ({"DURABILITY": "replica", "REPLICA_ACK_TIMEOUT_MS": "0"}, "REPLICA_ACK_TIMEOUT_MS"),
    ({"AUTH_MODE": "oauth"}, "AUTH_MODE"),
    ({"AUTH_MODE": "jwt", "JWT_SECRET": ""}, "JWT_SECRET"),
    ({"AUTH_MODE": "jwt", "JWT_PUBLIC_KEY": "/nonexistent/key.pem"}, "JWT_PUBLIC_KEY"),
    ({"DURABILITY": "quorum"}, "DURABILITY"),
    ({"ROOM_HISTORY_MAXLEN": "0"}, "ROOM_HISTORY_MAXLEN"),
    ({"OUTBOUND_QUEUE": "7"}, "OUTBOUND_QUEUE"),
    ({"OUTBOUND_BYTES": "65535"}, "OUTBOUND_BYTES"),
    ({"CONTROL_RATE": "0"}, "CONTROL_RATE"),
    ({"CONTROL_BURST": "0"}, "CONTROL_BURST"),
    ({"PUBLISH_BURST": "0"}, "PUBLISH_BURST"),
    ({"PRESENCE_TTL": "0"}, "PRESENCE_TTL"),
    ({"RETRY_BUDGET": "-1"}, "RETRY_BUDGET"),
    ({"SLOW_CONSUMER_TIMEOUT": "0"}, "SLOW_CONSUMER_TIMEOUT"),
    ({"DRAIN_TIMEOUT": "0"}, "DRAIN_TIMEOUT"),
    ({"DRAIN_GRACE": "-1"}, "DRAIN_GRACE"),
    ({"MAX_JOINS": "0"}, "MAX_JOINS"),
    ({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES"),
    ({"MAX_FRAME_BYTES": "0"}, "MAX_FRAME_BYTES"),
    ({"PUBLISH_RATE": "nan"}, "PUBLISH_RATE"),
    ({"HEARTBEAT_INTERVAL": "inf"}, "HEARTBEAT_INTERVAL"),
    ({"MIN_REPLICAS": "one"}, "MIN_REPLICAS"),
    ({"PORT": "http"}, "PORT"),
    ({"REDIS_SENTINELS": "s1:26379,s2"}, "REDIS_SENTINELS"),
]


@pytest.mark.parametrize(("env", "name"), REFUSED, ids=[f"{n}={e[n] or 'unset'}" for e, n in REFUSED])
def test_serve_refuses_a_bad_value_in_one_line_naming_it(env: dict[str, str], name: str, tmp_path: Path) -> None:
    # The Redis URL points at a closed port: a refusal must come before any connection attempt.
    done = run(["serve"], {"AUTH_MODE": "none", "REDIS_URL": "redis://127.0.0.1:9/0", **env}, tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("streamgate: ") and name in lines[0], lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_refusal_never_echoes_a_secret(tmp_path: Path) -> None:
    done = run(["serve"], {"AUTH_MODE": "jwt", "JWT_SECRET": SECRET, "PORT": "0"}, tmp_path)
    assert done.returncode == 2 and "PORT" in done.stderr
    assert SECRET not in done.stderr


class CommandInstance(ModuleAppInstance):
    """An instance started as ``streamgate serve``."""

    def command(self) -> list[str]:
        return [*STREAMGATE, "serve"]


def test_serve_runs_an_instance_until_sigterm(own_redis: RedisServer, tmp_path: Path) -> None:
    inst = CommandInstance("cli-serve", {"AUTH_MODE": "none", "REDIS_URL": own_redis.url,
                                         "LOG_FORMAT": "text"}, workdir=tmp_path)
    inst.start()
    try:
        with httpx.Client(base_url=inst.url, timeout=scaled(5)) as http:
            assert http.get("/readyz").json()["instance"] == "cli-serve"
            assert "StreamgateClient" in http.get("/static/streamgate.js").text
    finally:
        code = inst.stop()
    # uvicorn re-raises the SIGTERM it handled once the lifespan has ended.
    assert code in (0, -signal.SIGTERM), inst.log_tail()
    assert "Application shutdown complete" in inst.log_tail()
