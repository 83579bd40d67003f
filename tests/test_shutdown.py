"""Every way out of an instance ends the process in bounded time.

A process that cannot bind its port must exit (non-zero) instead of hanging in
the lifespan's shutdown; a SIGTERM that arrives while Redis is frozen or gone
(the Pub/Sub link reconnecting) must still end the process within
``DRAIN_GRACE + DRAIN_TIMEOUT`` plus the few seconds the teardown is allowed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BASE_ENV
from tests.support import Instance, ModuleAppInstance, RedisServer, open_client, scaled
from tests.support.waiting import async_wait_until
from tests.test_metrics import scrape

DRAIN_GRACE_S = 0.5
DRAIN_TIMEOUT_S = 2.0
# What the teardown after the drain may take (Service.stop's bounds) plus
# the interpreter's own start and exit.
TEARDOWN_S = 6.0


def _instance(name: str, redis_url: str, root: Path) -> ModuleAppInstance:
    env = dict(BASE_ENV, REDIS_URL=redis_url, DRAIN_GRACE=str(DRAIN_GRACE_S),
               DRAIN_TIMEOUT=str(DRAIN_TIMEOUT_S))
    return ModuleAppInstance(name, env, workdir=root / name)


def _wait_exit(inst: Instance, timeout: float) -> int:
    assert inst.proc is not None
    try:
        return inst.proc.wait(scaled(timeout))
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{inst.name} still running after {scaled(timeout):.0f}s\n{inst.log_tail(15)}") from None


def test_an_instance_whose_port_is_taken_exits_with_an_error(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    inst = _instance("bind", redis_server.url, tmp_path)
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        started = time.monotonic()
        inst.spawn(port=taken.getsockname()[1])
        code = _wait_exit(inst, TEARDOWN_S)
        assert code != 0, inst.log_tail(15)
        assert time.monotonic() - started < scaled(TEARDOWN_S)
        assert "address already in use" in inst.log_path.read_text(errors="replace")
    finally:
        if inst.is_running():
            inst.kill()
        taken.close()


async def _reconnects(inst: Instance) -> float:
    return (await scrape(inst)).value("streamgate_pubsub_reconnects_total")


@pytest.mark.parametrize("fault", ["frozen", "killed"])
async def test_sigterm_while_redis_is_gone_still_ends_the_process(
    fault: str, own_redis: RedisServer, tmp_path: Path, uid: Callable[[str], str], room: str
) -> None:
    inst = _instance(f"gone-{fault}", own_redis.url, tmp_path).start()
    client = await open_client(inst, uid("u"))
    try:
        await client.join(room, since="$")
        before = await _reconnects(inst)
        os.kill(own_redis.pid, signal.SIGSTOP if fault == "frozen" else signal.SIGKILL)
        # The bus noticed (a frozen server takes a few missed PINGs) and is
        # trying to connect again.
        await async_wait_until(lambda: _more_reconnects(inst, before), 10,
                               message="the Pub/Sub link never noticed Redis was gone")
        assert inst.proc is not None
        inst.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        bound = DRAIN_GRACE_S + DRAIN_TIMEOUT_S + TEARDOWN_S
        code = await asyncio.to_thread(_wait_exit, inst, bound)
        assert time.monotonic() - signalled < scaled(bound)
        assert code in (0, -signal.SIGTERM), f"exit code {code}\n{inst.log_tail(15)}"
        assert await client.wait_closed(timeout=1) == 1012
    finally:
        if inst.is_running():
            inst.kill()
        await client.close()


async def _more_reconnects(inst: Instance, before: float) -> bool:
    return await _reconnects(inst) > before
