"""``make run``: the service on http://127.0.0.1:8000 with nothing to set up.

With no ``REDIS_URL`` and nothing answering on localhost:6379, a private
``redis-server`` is started as a child process (data and append-only file
under ``./var/redis``) and stopped on exit. Authentication is off
(``AUTH_MODE=none``) unless configured, so the demo page works at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .config import dotenv


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed: apt-get install -y redis-server, or set REDIS_URL")
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--logfile", str(workdir / "redis.log")],
    )
    deadline = time.monotonic() + 10
    while not _answers("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"redis-server did not start; see {workdir / 'redis.log'}")
        time.sleep(0.05)
    return proc, port


def main() -> None:
    env = {**dotenv(Path(".env")), **os.environ}
    redis_proc: subprocess.Popen[bytes] | None = None
    if not env.get("REDIS_URL") and not env.get("REDIS_SENTINELS"):
        probe = int(env.get("DEV_REDIS_PROBE_PORT", "6379"))
        if _answers("127.0.0.1", probe):
            print(f"using the Redis on localhost:{probe}")
        else:
            redis_proc, port = _start_redis(Path("var/redis").resolve())
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            print(f"started a private redis-server on port {port} (data in ./var/redis)")
    env.setdefault("AUTH_MODE", "none")
    host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8000")
    print(f"streamgate: open http://{host}:{port}/ (AUTH_MODE={env['AUTH_MODE']})", flush=True)
    env["HOST"], env["PORT"] = host, port
    server = subprocess.Popen([sys.executable, "-m", "app"], env=env)
    # SIGTERM ends this launcher like Ctrl-C does: stop the server (which
    # drains), then the private Redis, never leaving either behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


if __name__ == "__main__":
    main()
