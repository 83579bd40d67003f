"""Fixtures for the hostile tests: instances that live for one module only.

Each module starts the few instances it needs with the settings it attacks,
on the session's private redis-server, and stops them when it is done.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import APP, BASE_ENV
from tests.support import Instance, RedisServer


class ModuleInstances:
    """Starts instances for one test module and stops them all at its end."""

    def __init__(self, redis_url: str, root: Path) -> None:
        self.redis_url = redis_url
        self.root = root
        self.started: list[Instance] = []

    def start(self, name: str, *, cls: type[Instance] = Instance, **env: str) -> Instance:
        settings = dict(BASE_ENV, REDIS_URL=self.redis_url)
        settings.update(env)
        unique = f"{name}-{uuid.uuid4().hex[:6]}"
        settings.setdefault("INSTANCE_ID", unique)
        inst = cls(name, settings, workdir=self.root / unique, app=APP)
        self.started.append(inst)
        return inst.start()

    def stop_all(self) -> None:
        running = [inst for inst in self.started if inst.is_running()]
        for inst in running:
            inst.signal_stop()
        for inst in running:
            inst.stop()
        self.started.clear()


@pytest.fixture(scope="module")
def instances(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleInstances]:
    factory = ModuleInstances(redis_server.url, tmp_path_factory.mktemp("hostile"))
    yield factory
    factory.stop_all()
