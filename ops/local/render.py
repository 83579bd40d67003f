"""Turn the ops/ config templates into configs for processes on this machine.

The templates under ops/redis, ops/sentinel and ops/nginx are written for the
compose network: service names (redis-master, app1), fixed ports, paths under
/etc and /var. Local launchers (``ops.cluster``, test fixtures, the failover
drill) run the same files with loopback addresses, free ports and every path
under a state dir. Rendering the shipped templates, instead of keeping a
second set of local configs, means the local cluster tests the real files.

Everything here is pure (text in, text out): it is tested without starting
anything, and a template edit that breaks a substitution fails loudly
(``TemplateError``) instead of producing a config that silently points at
the wrong place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

# The templates live in ops/ itself, shared by compose and the local tools.
OPS_DIR = Path(__file__).resolve().parents[1]
REDIS_MASTER_CONF = OPS_DIR / "redis" / "master.conf"
REDIS_REPLICA_CONF = OPS_DIR / "redis" / "replica.conf"
SENTINEL_CONF = OPS_DIR / "sentinel" / "sentinel.conf"
NGINX_SITE = OPS_DIR / "nginx" / "streamgate.conf"
NGINX_TLS_SITE = OPS_DIR / "nginx" / "streamgate-tls.conf"

LOOPBACK = "127.0.0.1"
MASTER_NAME = "mymaster"
# Passive health check parameters for each upstream server (see the comments
# in ops/nginx/streamgate.conf).
UPSTREAM_PARAMS = "max_fails=2 fail_timeout=5s"

_MONITOR = re.compile(r"^sentinel monitor (\S+) \S+ \d+ (\d+)[ \t]*$", re.M)
_UPSTREAMS = re.compile(
    r"^([ \t]*)# BEGIN upstreams\n.*?^[ \t]*# END upstreams[ \t]*$", re.M | re.S
)
_SITE_LOG = re.compile(r"^([ \t]*)access_log[ \t]+/var/log/nginx/(\S+)", re.M)
_LISTEN = re.compile(r"^([ \t]*)listen[ \t]+(\d+)([^;\n]*);", re.M)


class TemplateError(ValueError):
    """A template no longer has the line or marker a substitution relies on."""


def sentinel_conf(
    template: str,
    master_port: int,
    *,
    master_host: str = LOOPBACK,
    master_name: str = MASTER_NAME,
    quorum: int | None = None,
    down_after_ms: int | None = None,
    failover_timeout_ms: int | None = None,
) -> str:
    """Point the template's single `sentinel monitor` line at a local master.

    ``quorum``, ``down_after_ms`` and ``failover_timeout_ms`` replace the
    template's values when given; otherwise the template's choices stand.
    """
    found = _MONITOR.findall(template)
    if len(found) != 1:
        raise TemplateError(f"expected one `sentinel monitor` line, found {len(found)}")
    old_name, old_quorum = found[0]
    q = quorum if quorum is not None else int(old_quorum)
    text = _MONITOR.sub(
        f"sentinel monitor {master_name} {master_host} {master_port} {q}", template
    )
    if master_name != old_name:
        text = re.sub(
            rf"^(sentinel \S+) {re.escape(old_name)}\b", rf"\1 {master_name}", text, flags=re.M
        )
    for key, value in (
        ("down-after-milliseconds", down_after_ms),
        ("failover-timeout", failover_timeout_ms),
    ):
        if value is None:
            continue
        text, n = re.subn(
            rf"^sentinel {key} {re.escape(master_name)} \d+",
            f"sentinel {key} {master_name} {value}",
            text,
            flags=re.M,
        )
        if n != 1:
            raise TemplateError(f"expected one `sentinel {key}` line, found {n}")
    return text


def nginx_site(
    template: str,
    upstream_ports: Sequence[int],
    listen: Mapping[int, int],
    *,
    host: str = LOOPBACK,
) -> str:
    """The site template with local upstreams and listen ports.

    Replaces the servers between ``# BEGIN upstreams`` and ``# END upstreams``
    with ``host:port`` entries, and every ``listen N ...;`` with
    ``listen host:listen[N] ...;`` (parameters such as ``ssl http2`` kept).
    Every listen port of the template must be mapped: a forgotten one would
    make nginx bind a privileged port on every interface.
    """
    if not upstream_ports:
        raise ValueError("at least one upstream port is needed")
    matches = list(_UPSTREAMS.finditer(template))
    if len(matches) != 1:
        raise TemplateError(f"expected one BEGIN/END upstreams block, found {len(matches)}")
    indent = matches[0].group(1)
    servers = "".join(
        f"{indent}server {host}:{p} {UPSTREAM_PARAMS};\n" for p in upstream_ports
    )
    block = f"{indent}# BEGIN upstreams (generated)\n{servers}{indent}# END upstreams"
    text = _UPSTREAMS.sub(lambda _m: block, template)

    def _listen(m: re.Match[str]) -> str:
        port = int(m.group(2))
        if port not in listen:
            raise TemplateError(f"template listens on {port}, which has no local port")
        return f"{m.group(1)}listen {host}:{listen[port]}{m.group(3)};"

    text, n = _LISTEN.subn(_listen, text)
    if n == 0:
        raise TemplateError("template has no `listen` line")
    return text


def _q(path: Path) -> str:
    """A path quoted for nginx (state dirs may contain spaces)."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx_main(site: str, state_dir: Path, *, user: str | None = None) -> str:
    """A complete nginx.conf that runs ``site`` with every file in ``state_dir``.

    Runs in the foreground (``daemon off``) so the launcher's recorded pid is
    the nginx master; pid file, logs and temp dirs live in ``state_dir``, so
    nginx needs neither /var/log/nginx nor /var/lib/nginx, as root or not.
    ``user`` (only meaningful when started as root) is the account workers run
    as; they must be able to write the temp dirs under ``state_dir``.
    """
    d = state_dir
    # The site's own log lines (query-less format) go to the state dir too.
    site = _SITE_LOG.sub(lambda m: f"{m.group(1)}access_log {_q(d / m.group(2))}", site)
    indented = "".join(f"    {line}\n" if line.strip() else "\n" for line in site.splitlines())
    user_line = f"user {user};\n" if user else ""
    return f"""# Generated by ops/local/render.py from ops/nginx/streamgate.conf; do not edit.
{user_line}daemon off;
worker_processes 1;
pid {_q(d / "nginx.pid")};
error_log {_q(d / "error.log")} notice;

events {{
    worker_connections 4096;
}}

http {{
    access_log {_q(d / "access.log")};
    client_body_temp_path {_q(d / "tmp" / "client_body")};
    proxy_temp_path {_q(d / "tmp" / "proxy")};
    fastcgi_temp_path {_q(d / "tmp" / "fastcgi")};
    uwsgi_temp_path {_q(d / "tmp" / "uwsgi")};
    scgi_temp_path {_q(d / "tmp" / "scgi")};

{indented}}}
"""
