"""Start, wait for and stop the local processes of a streamgate deployment.

Shared by ``python -m ops.cluster``, test fixtures and the failover drill, so
that all of them start redis-server, redis-sentinel, uvicorn and nginx the
same way, from the same ops/ templates.

Rules every function here keeps:

- Loopback only: every process binds 127.0.0.1, on a port checked free
  (``free_ports``), never a fixed one (6379 in particular is someone else's).
- Detached: each process gets its own session (``start_new_session``), its
  stdout/stderr go to a log file and stdin is /dev/null, so a launcher can
  exit and leave it running, and a terminal's Ctrl-C does not reach it.
- Stop by recorded pid only: ``stop`` signals exactly the pid it is given
  (and, for SIGKILL, that pid's own process group, which only exists because
  we created it), after checking the pid still belongs to the process that
  was recorded (same start time), so a recycled pid is never signalled.
- Every wait is bounded by a deadline.
"""

from __future__ import annotations

import grp
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from ops.local import render
from ops.local.render import LOOPBACK

REPO_ROOT = Path(__file__).resolve().parents[2]
# Default Redis and Sentinel ports: a shared Redis may run there; never use them.
RESERVED_PORTS = frozenset({6379, 26379})
# Short names for uvicorn --ws values that are class paths: "lean" is
# streamgate's own protocol class for /ws (app/lean.py, what `python -m app`
# runs); uvicorn's own names serve /ws through the ASGI app.
WS_ALIASES = {"lean": "app.lean:LeanWebSocket"}
T = TypeVar("T")


class ProcessExited(RuntimeError):
    """A process we were waiting for exited; the message carries its log tail."""


@dataclass
class Proc:
    """One started process, as recorded in a cluster's state.json."""

    name: str
    role: str  # redis | sentinel | app | nginx
    pid: int
    port: int
    cmd: list[str]
    log: str
    # Start time in clock ticks since boot (/proc/PID/stat field 22): with the
    # pid it identifies the process even after the pid is recycled.
    started: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Proc:
        return cls(**d)  # type: ignore[arg-type]


# Popen objects of the processes this interpreter started, so that ``stop``
# and ``is_alive`` can reap them (a dead child stays a zombie until waited).
_children: dict[int, subprocess.Popen[bytes]] = {}


# --- ports and waiting ---------------------------------------------------------


# Every port free_ports returned in this process.
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct ports that are free on ``host`` right now.

    Drawn at random from 20000 up to the kernel's ephemeral range, each
    checked by binding it. Below that range the kernel never hands out a
    port by itself (not for ``bind(0)``, not for an outgoing connection), so
    a port chosen here cannot be taken by some client's connect() in the
    moment between choosing it and the server binding it. All sockets stay
    open until every port is chosen, so the ports are distinct, and a port
    is never handed out twice by one process (two calls in a row could
    otherwise draw the same port before either is bound). Falls back to
    OS-assigned ports when that range is too small.
    """
    low, high = 20000, _ephemeral_range()[0]
    use_range = high - low >= 1000
    rng = random.Random()
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        for attempt in range(60 * n):
            if len(ports) == n:
                break
            wanted = rng.randrange(low, high) if use_range and attempt < 50 * n else 0
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, wanted))
                port = s.getsockname()[1]
            except OSError:
                s.close()
                continue
            if port in RESERVED_PORTS or port in ports or port in _handed_out:
                s.close()
                continue
            socks.append(s)  # held until the end, so no later draw can get it
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    if len(ports) < n:
        raise RuntimeError(f"could not find {n} free ports on {host}")
    _handed_out.update(ports)
    return ports


def free_port(host: str = LOOPBACK) -> int:
    return free_ports(1, host)[0]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "condition",
    watch: Iterable[Proc] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    Raises ``TimeoutError`` after ``timeout`` seconds, or ``ProcessExited`` as
    soon as one of the ``watch`` processes has died (no point waiting for a
    crashed server). Exceptions from the predicate count as "not yet".
    """
    watch = list(watch)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - "not ready yet" comes in many forms
            last_error = e
        for p in watch:
            if not is_alive(p.pid, p.started):
                raise ProcessExited(f"{p.name} (pid {p.pid}) exited while waiting for "
                                    f"{what}\n{log_tail(p.log)}")
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 10.0, *, proc: Proc | None = None,
                  host: str = LOOPBACK) -> None:
    """Wait until host:port accepts connections (and ``proc`` is still alive)."""
    wait_until(lambda: port_open(port, host), timeout, what=f"port {host}:{port}",
               watch=[proc] if proc else [])


def started_or_stopped(proc: Proc, wait: float | None) -> Proc:
    """Wait up to ``wait`` s for a just-spawned ``proc`` to listen; if it
    does not (it died, or it hangs), stop it before raising, so that no
    caller is left with a running process it never got a record of."""
    if wait is None:
        return proc
    try:
        wait_for_port(proc.port, wait, proc=proc)
    except BaseException:
        stop_proc(proc, 5.0)
        raise
    return proc


def missing_programs(*names: str) -> list[str]:
    """The programs among ``names`` that are not on PATH."""
    return [name for name in names if shutil.which(name) is None]


def log_tail(path: str | Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])


# --- process identity, liveness, stopping ------------------------------------


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split
    # after its closing parenthesis. Field 3 is the state, field 22 start time.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def is_alive(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if given, started at ``started``."""
    _reap(pid)
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def stop(pid: int, timeout: float = 10.0, started: int | None = None, *,
         resend_every: float | None = None) -> bool:
    """Stop one recorded process: SIGTERM, then SIGKILL after ``timeout``.

    Does nothing if ``pid`` is not running or (with ``started``) is now a
    different process. SIGKILL also goes to the process group led by ``pid``
    when there is one (we start every process as a session leader), so no
    worker or fork child is left behind. Returns True once it is gone.

    ``resend_every``: repeat SIGTERM at this interval. Redis ignores a SIGTERM
    that arrives while it writes its initial AOF ("can't exit") and does not
    retry, so it needs another; uvicorn must NOT get one (a second signal
    skips its graceful drain), hence opt-in.
    """
    if not is_alive(pid, started):
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, signal.SIGTERM)
            # A process a drill froze with SIGSTOP can only act on SIGTERM
            # once it runs again; for a running one SIGCONT is a no-op.
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            return True
        step = deadline - time.monotonic()
        if resend_every is not None:
            step = min(step, resend_every)
        try:
            wait_until(lambda: not is_alive(pid, started), max(step, 0.0), interval=0.05,
                       what=f"pid {pid} to exit")
            return True
        except TimeoutError:
            if time.monotonic() >= deadline or not is_alive(pid, started):
                break
    if not is_alive(pid, started):
        return True
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    try:
        wait_until(lambda: not is_alive(pid, started), 5.0, what=f"pid {pid} to die")
        return True
    except TimeoutError:
        return False


def stop_proc(p: Proc, timeout: float = 10.0) -> bool:
    """``stop`` with the right signalling for the process's role."""
    resend = 1.0 if p.role in ("redis", "sentinel") else None
    return stop(p.pid, timeout, p.started, resend_every=resend)


def stop_all(procs: Sequence[Proc], timeout: float = 10.0) -> list[Proc]:
    """Stop ``procs`` in reverse start order; return the ones still running."""
    return [p for p in reversed(procs) if not stop_proc(p, timeout)]


# --- starting -------------------------------------------------------------------


def respawn(proc: Proc, env: Mapping[str, str] | None = None, *,
            wait: float | None = 10.0) -> Proc:
    """Start a recorded process again: same command, port and log, new pid.

    For a node whose config copy Sentinel rewrote, the recorded command
    (config copy + port) brings it back in the role Sentinel last gave it.
    """
    overrides = proc.extra.get("env")
    if env is None and isinstance(overrides, dict):
        env = _merged_env(overrides)
    new = spawn(proc.name, proc.role, proc.cmd, proc.port, proc.log, env=env,
                cwd=proc.extra.get("cwd"))  # type: ignore[arg-type]
    new.extra = dict(proc.extra)
    return started_or_stopped(new, wait)


def spawn(name: str, role: str, cmd: Sequence[str], port: int, log: str | Path, *,
          env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> Proc:
    """Start ``cmd`` detached, output appended to ``log``; record it as a Proc."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
    _children[child.pid] = child
    return Proc(name=name, role=role, pid=child.pid, port=port, cmd=list(cmd),
                log=str(log), started=start_time(child.pid))


def start_redis(port: int, dir: str | Path, replicaof: int | tuple[str, int] | None = None,
                extra_args: Sequence[str] = (), *, conf: Path | None = None,
                name: str | None = None, wait: float | None = 10.0) -> Proc:
    """Start redis-server on 127.0.0.1:``port`` with data and config in ``dir``.

    The config is a copy of ops/redis/master.conf (or replica.conf when
    ``replicaof`` is given; ``conf`` overrides), made only if ``dir/redis.conf``
    does not exist yet, with ``replicaof`` (a port on 127.0.0.1, or
    (host, port)) written into it. Sentinel rewrites that copy when it
    reconfigures the node, so a restart in the same ``dir`` with the recorded
    command keeps the role Sentinel last gave it. On such a restart a
    ``replicaof`` argument is passed as ``--replicaof`` and overrides the copy.
    ``extra_args`` are passed last, as ``--name value`` pairs, and win over
    everything (e.g. a test that wants ``--min-replicas-to-write 0``).
    Waits up to ``wait`` s for the port.
    """
    d = Path(dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    copy = d / "redis.conf"
    master = None
    if replicaof is not None:
        master = (LOOPBACK, replicaof) if isinstance(replicaof, int) else replicaof
    cmd = ["redis-server", str(copy), "--port", str(port), "--bind", LOOPBACK,
           "--dir", str(d), "--daemonize", "no", "--logfile", ""]
    if not copy.exists():
        template = conf or (render.REDIS_REPLICA_CONF if master else render.REDIS_MASTER_CONF)
        text = template.read_text()
        if master:
            text += f"\n# Added by ops/local/procs.py at first start.\nreplicaof {master[0]} {master[1]}\n"
        copy.write_text(text)
    elif master:
        cmd += ["--replicaof", master[0], str(master[1])]
    cmd += list(extra_args)
    proc = spawn(name or f"redis-{port}", "redis", cmd, port, d / "redis.log")
    return started_or_stopped(proc, wait)


def start_sentinel(port: int, dir: str | Path, master_port: int, *,
                   master_name: str = render.MASTER_NAME, quorum: int | None = None,
                   down_after_ms: int | None = None, failover_timeout_ms: int | None = None,
                   extra_args: Sequence[str] = (), name: str | None = None,
                   wait: float | None = 10.0) -> Proc:
    """Start redis-sentinel on 127.0.0.1:``port`` monitoring 127.0.0.1:``master_port``.

    Sentinel rewrites its config file, so it runs a copy in ``dir``, rendered
    from ops/sentinel/sentinel.conf only if ``dir/sentinel.conf`` does not
    exist: a restart in the same ``dir`` keeps the sentinel's id, epoch and
    its latest view of the master (the master/timing arguments then only
    seeded the first start). ``quorum`` and the timings default to the
    template's values.
    """
    d = Path(dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    copy = d / "sentinel.conf"
    if not copy.exists():
        copy.write_text(render.sentinel_conf(
            render.SENTINEL_CONF.read_text(), master_port, master_name=master_name,
            quorum=quorum, down_after_ms=down_after_ms, failover_timeout_ms=failover_timeout_ms,
        ))
    cmd = ["redis-sentinel", str(copy), "--port", str(port), "--bind", LOOPBACK,
           "--dir", str(d), "--daemonize", "no", "--logfile", "", *extra_args]
    proc = spawn(name or f"sentinel-{port}", "sentinel", cmd, port, d / "sentinel.log")
    return started_or_stopped(proc, wait)


def _secret(name: str) -> bool:
    return any(w in name.upper() for w in ("SECRET", "PASSWORD", "TOKEN"))


def _merged_env(overrides: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment with ``overrides`` applied (None removes)."""
    full = dict(os.environ)
    for k, v in overrides.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return full


def start_app(port: int, env: Mapping[str, str | None], log: str | Path, *,
              app: str = "app.main:app", cwd: str | Path = REPO_ROOT,
              name: str | None = None, extra_args: Sequence[str] = (),
              wait: float | None = None, ws: str = "lean") -> Proc:
    """Start one app instance: ``python -m uvicorn app --host 127.0.0.1 --port port
    --ws <ws>`` (``ws``: a uvicorn ``--ws`` value or an alias of ``WS_ALIASES``;
    by default /ws on streamgate's own protocol class, as ``python -m app``).

    ``env`` is applied on top of this process's environment (a None value
    removes the variable), so PATH and friends pass through. Uses this
    interpreter (the venv's). Does not wait by default: instances start in
    parallel and ``probes.wait_http_ok`` on /healthz tells when they serve.
    """
    full = _merged_env(env)
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", str(port),
           "--ws", WS_ALIASES.get(ws, ws), *extra_args]
    proc = spawn(name or f"app-{port}", "app", cmd, port, log, env=full, cwd=cwd)
    # What `respawn` needs to start it the same way again. This ends up in
    # state.json, so secret-looking variables are left out: a respawn takes
    # them from its own environment.
    proc.extra = {"env": {k: v for k, v in env.items() if not _secret(k)}, "cwd": str(cwd)}
    return started_or_stopped(proc, wait)


def write_nginx_conf(port: int, upstream_ports: Sequence[int], state_dir: str | Path, *,
                     template: Path = render.NGINX_SITE) -> Path:
    """Render ``template`` into ``state_dir/nginx.conf`` (plus its temp dirs)."""
    d = Path(state_dir).resolve()
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    site = render.nginx_site(template.read_text(), upstream_ports, {80: port})
    user = None
    if os.geteuid() == 0:
        # Workers drop to this account; it owns the state dir, so they can
        # write the temp dirs even when the state dir's parents are private.
        st = d.stat()
        user = f"{pwd.getpwuid(st.st_uid).pw_name} {grp.getgrgid(st.st_gid).gr_name}"
    conf = d / "nginx.conf"
    conf.write_text(render.nginx_main(site, d, user=user))
    return conf


def nginx_cmd(conf: Path, *extra: str) -> list[str]:
    """nginx with prefix, config and early error log all under the conf's dir.

    ``-e`` matters: without it nginx opens /var/log/nginx/error.log before it
    has read the config that says otherwise.
    """
    d = conf.parent
    return ["nginx", "-p", str(d), "-c", str(conf), "-e", str(d / "error.log"), *extra]


def check_nginx_conf(conf: Path, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a generated config; raises CalledProcessError with its output."""
    return subprocess.run(nginx_cmd(conf, "-t", "-q"), capture_output=True, text=True,
                          timeout=timeout, check=True)


def start_nginx(port: int, upstream_ports: Sequence[int], state_dir: str | Path, *,
                template: Path = render.NGINX_SITE, name: str = "nginx",
                wait: float | None = 10.0) -> Proc:
    """Start nginx in the foreground on 127.0.0.1:``port`` in front of the apps.

    The config is rendered from ops/nginx/streamgate.conf into ``state_dir``
    and checked with ``nginx -t`` first, so a bad template fails here with
    nginx's own message rather than as a process that died.
    """
    conf = write_nginx_conf(port, upstream_ports, state_dir, template=template)
    try:
        check_nginx_conf(conf)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"nginx -t failed for {conf}:\n{e.stderr}") from e
    proc = spawn(name, "nginx", nginx_cmd(conf), port, conf.parent / "nginx.out")
    return started_or_stopped(proc, wait)
