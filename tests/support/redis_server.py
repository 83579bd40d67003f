"""A private `redis-server` process on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from .ports import free_port
from .processes import kill, tail, terminate
from .timeouts import scaled
from .waiting import wait_until


def answers_ping(proc: subprocess.Popen[bytes], client: redis.Redis, timeout: float) -> bool:
    """Whether a just-started server answers PING in time; False as soon as it
    exits (e.g. the port was taken in between: the caller tries another)."""

    def settled() -> str | None:
        if proc.poll() is not None:
            return "exited"
        try:
            return "ready" if client.ping() else None
        except redis.RedisError:  # refused, timed out, still loading
            return None

    try:
        return wait_until(settled, timeout) == "ready"
    except AssertionError:  # never answered
        return False


class RedisServer:
    """Starts `redis-server` without persistence in its own temp dir.

    Usage::

        with RedisServer() as server:
            client = server.client()

    The process is stopped by pid (SIGTERM, then SIGKILL).
    """

    def __init__(self, workdir: Path | None = None, *, extra_args: tuple[str, ...] = ()) -> None:
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="sg-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        for _attempt in range(3):
            self.port = free_port()
            args = [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.dir),
                "--logfile", str(self.log_path),
                "--daemonize", "no",
                *self.extra_args,
            ]
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
            try:
                ready = self._wait_ready(timeout)
            except BaseException:
                kill(self.proc)  # whatever interrupted the wait, no server outlives it
                raise
            if ready:
                return self
            kill(self.proc)
        raise RuntimeError(f"redis-server did not start:\n{tail(self.log_path)}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return answers_ping(self.proc, client, timeout)
        finally:
            client.close()

    def client(self, **kwargs: object) -> redis.Redis:
        """A synchronous client for faults and checks from the test itself."""
        options: dict[str, object] = {"socket_timeout": scaled(5), "decode_responses": True}
        options.update(kwargs)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)  # type: ignore[arg-type]

    def start_replica(self, workdir: Path, timeout: float = 15.0) -> RedisServer:
        """A replica of this server, returned once its link to it is up (a
        replica that never synced cannot acknowledge a WAIT); stopped again
        if that never happens."""
        replica = RedisServer(workdir, extra_args=("--replicaof", "127.0.0.1", str(self.port))).start()
        try:
            client = replica.client()
            try:
                wait_until(lambda: client.info("replication").get("master_link_status") == "up", timeout,
                           interval=0.05, message=f"replica of {self.port} never linked up")
            finally:
                client.close()
        except BaseException:
            replica.stop()
            raise
        return replica

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, grace=5)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
