"""One server instance as a real uvicorn subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode

import httpx

from ops.local.procs import is_alive

from .ports import free_port
from .processes import kill, tail, terminate
from .timeouts import scaled
from .waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]

# How instances serve /ws: streamgate's own protocol class (what
# `python -m app` runs) unless STREAMGATE_TEST_WS names another uvicorn
# `--ws` value; "asgi" leaves uvicorn's default, so /ws goes through the ASGI
# app as with a plain `uvicorn app.main:app`.
LEAN_WS = "app.lean:LeanWebSocket"
TEST_WS = os.environ.get("STREAMGATE_TEST_WS", LEAN_WS)


# Only streamgate's own class owns the socket's transport: on plain ASGI a
# peer that stopped reading cannot be dropped at once (app/asgi_socket.py).
DROPS_STALLED_SOCKETS = TEST_WS == LEAN_WS


def ws_args(ws: str = TEST_WS) -> list[str]:
    """The uvicorn CLI arguments that pick how /ws is served."""
    return [] if ws == "asgi" else ["--ws", ws]

# Instances that are running right now, and every instance ever started in this
# session; conftest prints the logs of the ones involved when a test fails.
RUNNING: dict[int, Instance] = {}
STARTED: list[Instance] = []


class InstanceStartError(RuntimeError):
    pass


class Instance:
    """`python -m uvicorn app.main:app` on a free loopback port.

    `env` is added to a copy of the test process environment. The instance
    runs in its own temp dir (so no stray `.env` is picked up) and logs to
    `log_path`. `start()` returns once `/healthz` and `/readyz` answer 200.
    """

    def __init__(
        self, name: str, env: Mapping[str, str], workdir: Path | None = None, app: str = "app.main:app",
        ws: str = TEST_WS,
    ) -> None:
        self.name = name
        self.app = app
        self.ws = ws  # uvicorn's --ws value ("asgi": its default), see ws_args
        self.env = dict(env)
        self.env.setdefault("INSTANCE_ID", name)
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"sg-{name}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{name}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    # -- addresses ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, user: str | None = None, token: str | None = None, **params: str) -> str:
        query: dict[str, str] = dict(params)
        if user is not None:
            query["user"] = user
        if token is not None:
            query["token"] = token
        suffix = f"?{urlencode(query)}" if query else ""
        return f"ws://127.0.0.1:{self.port}/ws{suffix}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "instance not started"
        return self.proc.pid

    @property
    def instance_id(self) -> str:
        return self.env["INSTANCE_ID"]

    # -- life cycle --------------------------------------------------------

    def launch_env(self) -> dict[str, str]:
        """Variables the start command itself needs (none for uvicorn's CLI)."""
        return {}

    def command(self) -> list[str]:
        """What starts the process (subclasses start it another way)."""
        return [
            sys.executable, "-m", "uvicorn", self.app,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--no-access-log",
            *ws_args(self.ws),
        ]

    def start(self, timeout: float = 20.0) -> Instance:
        self.spawn()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def spawn(self, port: int | None = None) -> Instance:
        """Start the process without waiting for it to serve (``port``: a
        given one, e.g. one that is already taken, instead of a free one)."""
        self.port = free_port() if port is None else port
        env = dict(os.environ)
        env.update(self.env)
        env.update(self.launch_env())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        args = self.command()
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                args, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        RUNNING[self.proc.pid] = self
        STARTED.append(self)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until /healthz, then /readyz, answer 200; a process that exits
        first, or never gets there, is an InstanceStartError with its log."""
        proc = self.proc
        assert proc is not None
        pending = ["/healthz", "/readyz"]
        with httpx.Client(base_url=self.url, timeout=scaled(2)) as http:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise InstanceStartError(
                        f"instance {self.name} exited with {proc.returncode} during start-up\n"
                        f"--- log tail ---\n{self.log_tail()}"
                    )
                try:
                    while pending and http.get(pending[0]).status_code == 200:
                        pending.pop(0)
                except httpx.TransportError:
                    pass
                return not pending

            try:
                wait_until(ready, timeout, interval=0.05)
            except AssertionError:
                raise InstanceStartError(
                    f"instance {self.name} not ready ({pending[0]}) after {scaled(timeout):.0f}s\n"
                    f"--- log tail ---\n{self.log_tail()}"
                ) from None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and is_alive(self.proc.pid)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.proc is None:
            return None
        self.exit_code = terminate(self.proc, grace)
        RUNNING.pop(self.proc.pid, None)
        return self.exit_code

    def signal_stop(self) -> None:
        """Send SIGTERM without waiting (to stop several instances at once)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> int | None:
        """SIGKILL: the instance disappears without any clean-up."""
        if self.proc is None:
            return None
        self.exit_code = kill(self.proc)
        RUNNING.pop(self.proc.pid, None)
        return self.exit_code

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    # -- HTTP --------------------------------------------------------------

    def http(self, **kwargs: object) -> httpx.AsyncClient:
        """An async HTTP client bound to this instance (use with `async with`)."""
        options: dict[str, object] = {"base_url": self.url, "timeout": scaled(10)}
        options.update(kwargs)
        return httpx.AsyncClient(**options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Instance({self.name!r}, port={self.port}, pid={self.proc.pid if self.proc else None})"


class ModuleAppInstance(Instance):
    """The production entry point, ``python -m app`` (as the Dockerfile runs
    it), instead of plain uvicorn: what it passes to uvicorn is under test."""

    def launch_env(self) -> dict[str, str]:
        return {"HOST": "127.0.0.1", "PORT": str(self.port)}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app"]
