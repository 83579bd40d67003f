"""Instance output: one JSON object per line, and never a token.

Instances are started the two documented ways (`uvicorn app.main:app`, as the
harness does, and `python -m app`), driven through connect, join, publish,
an invalid frame and a drain, then stopped; their whole stdout/stderr is read
back afterwards.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE_ENV, InstanceFactory
from tests.support import RedisServer, WsClient, new_client_id, open_client, try_connect
from tests.support.http import auth, room_path
from tests.support.tokens import SECRET, make_token, unsigned_token
from tests.support import ModuleAppInstance

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$")
LEVELS = {"debug", "info", "warning", "error", "critical"}


def assert_json_lines(text: str, instance_id: str) -> list[dict[str, Any]]:
    """Every non-empty line is a JSON object with time, level, instance and event."""
    entries = []
    bad = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            bad.append(f"line {number} is not JSON: {line[:160]!r}")
            continue
        if not isinstance(entry, dict):
            bad.append(f"line {number} is not an object: {line[:160]!r}")
            continue
        problems = []
        if not (isinstance(entry.get("time"), str) and TIME_RE.match(entry["time"])):
            problems.append(f"time {entry.get('time')!r}")
        if entry.get("level") not in LEVELS:
            problems.append(f"level {entry.get('level')!r}")
        if entry.get("instance") != instance_id:
            problems.append(f"instance {entry.get('instance')!r}")
        if not (isinstance(entry.get("event"), str) and entry["event"]):
            problems.append(f"event {entry.get('event')!r}")
        if problems:
            bad.append(f"line {number}: {', '.join(problems)}: {line[:160]!r}")
        entries.append(entry)
    assert not bad, "log lines that break the format:\n  " + "\n  ".join(bad)
    assert entries, "the instance wrote no log lines at all"
    return entries


async def drive(client: WsClient, room: str) -> None:
    """Traffic that makes an instance log: join, publish, an invalid frame."""
    await client.join(room, since="$")
    await client.publish(room, {"log": "line"}, client_id=new_client_id())
    await client.send_text("{not json")
    await client.expect("error")


@pytest.fixture
def module_app(redis_server: RedisServer, tmp_path: Path) -> Iterator[ModuleAppInstance]:
    app = ModuleAppInstance("python-m-app", dict(BASE_ENV, REDIS_URL=redis_server.url, INSTANCE_ID="logs-module-app", DRAIN_GRACE="0"),
                            workdir=tmp_path)
    try:
        yield app.start()
    finally:
        app.stop()


async def test_python_m_app_writes_only_json_lines(
    module_app: ModuleAppInstance, uid: Callable[[str], str], room: str
) -> None:
    client = await open_client(module_app, uid("logger"))
    try:
        await drive(client, room)
    finally:
        await client.close()
    module_app.stop()
    entries = assert_json_lines(module_app.log_path.read_text(errors="replace"), "logs-module-app")
    events = {e["event"] for e in entries}
    assert {"drain_start", "drain_done"} <= events
    assert all(e["level"] == "info" for e in entries if e["event"].startswith("drain"))


def _secret_parts(token: str) -> list[str]:
    """The whole token and its payload and signature segments (the header
    segment is the same for every HS256 token and reveals nothing)."""
    parts = [token]
    segments = token.split(".")
    parts += [s for s in segments[1:] if len(s) >= 8]
    return parts


@dataclass
class RunLog:
    """The whole output of a stopped `uvicorn app.main:app` instance in jwt mode."""

    text: str
    instance_id: str
    tokens: list[str]


@pytest.fixture(scope="module")
async def jwt_run(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> RunLog:
    """Start, drive with tokens in every place a client may put one, and stop."""
    factory = InstanceFactory(redis_server.url, tmp_path_factory.mktemp("logs"))
    try:
        inst = factory.start("JL", AUTH_MODE="jwt", JWT_SECRET=SECRET, ALLOWED_ORIGINS="https://app.example")
        suffix = uuid.uuid4().hex[:8]
        room = f"room-{suffix}"
        good = make_token(f"holder-{suffix}")
        in_header = make_token(f"proto-{suffix}")
        wrong_key = make_token(f"forger-{suffix}", secret="a-different-secret-" + "y" * 32)
        expired = make_token(f"late-{suffix}", ttl=-120)
        unsigned = unsigned_token(f"none-{suffix}")
        for_http = make_token(f"http-{suffix}")

        client = await open_client(inst, token=good, name="good")
        try:
            await drive(client, room)
        finally:
            await client.close()
        proto = await WsClient.open(inst.ws_url(), subprotocols=["streamgate.v1", f"bearer.{in_header}"])
        await proto.close()
        for bad in (wrong_key, expired, unsigned):
            assert (await try_connect(inst.ws_url(token=bad))).refused
        # A refused Origin with a valid token in the URL.
        assert (await try_connect(inst.ws_url(token=for_http), origin="https://evil.example")).refused
        async with inst.http() as http:
            ok = await http.get(room_path(room, "messages"), **auth(token=for_http))
            assert ok.status_code == 200
            # Tokens where a route does not expect them still end up in request lines.
            await http.get(room_path(room, "messages"), params={"token": for_http})
            await http.get("/readyz", params={"access_token": for_http, "x": "1"})
            await http.get(room_path(room, "messages"), headers={"Authorization": f"Bearer {wrong_key}"})
        inst.stop()
        return RunLog(inst.log_path.read_text(errors="replace"), inst.instance_id,
                      [good, in_header, wrong_key, expired, unsigned, for_http])
    finally:
        factory.stop_all()


def test_tokens_never_reach_the_log(jwt_run: RunLog) -> None:
    for token in jwt_run.tokens:
        for part in _secret_parts(token):
            assert part not in jwt_run.text, f"a token fragment reached the log: {part[:12]}..."
    # The handshakes were logged (the check above is not vacuous), with the query redacted.
    ws_lines = [line for line in jwt_run.text.splitlines() if "/ws" in line]
    assert ws_lines, "no handshake lines in the log"
    assert any("<redacted>" in line for line in ws_lines)


def test_uvicorn_run_instance_writes_only_json_lines(jwt_run: RunLog) -> None:
    entries = assert_json_lines(jwt_run.text, jwt_run.instance_id)
    events = {e["event"] for e in entries}
    assert {"drain_start", "drain_done"} <= events
