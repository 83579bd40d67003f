"""Redis over TLS with an ACL user: the credentials and the CA must be right.

A private redis-server listens on a TLS port only (``--port 0``), on two
loopback addresses, with a certificate for 127.0.0.1 from a CA made here with
openssl, an ACL user ``sg`` and the default user disabled. Instances that get
the password, the CA or the host name wrong must keep running, answer 503 on
/readyz and ``unavailable`` to publishes, and never write the password to
their log.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.hostile.conftest import ModuleInstances
from tests.hostile.support import LogMark, UnreadyInstance, metric
from tests.support import Instance, ServerError, async_wait_until, new_client_id, open_client
from tests.support.ports import free_port
from tests.support.processes import kill, tail, terminate
from tests.support.redis_server import answers_ping
from tests.support.timeouts import scaled

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("redis-server") is None,
    reason="needs openssl and redis-server",
)

USER, PASSWORD = "sg", "sg-secret-4f1c9a"
WRONG_PASSWORD = "wrong-pass-77e2b0"
FAST_FAIL = {"RETRY_BUDGET": "0.5"}  # a refused Redis costs each call half a second, not ten


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(root: Path) -> Pki:
    """A CA and a server certificate for IP 127.0.0.1 only."""
    (root / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=streamgate test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=root)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=root)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=root)
    return Pki(root / "ca.pem", root / "server.pem", root / "server.key")


class TlsRedis:
    """redis-server with TLS only, an ACL user, and no default user."""

    def __init__(self, root: Path, pki: Pki) -> None:
        self.root = root
        self.pki = pki
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "redis-tls.log"

    def start(self) -> TlsRedis:
        for _attempt in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen([
                "redis-server", "--port", "0", "--tls-port", str(self.port),
                "--bind", "127.0.0.1 127.0.0.2",
                "--tls-cert-file", str(self.pki.cert), "--tls-key-file", str(self.pki.key),
                "--tls-ca-cert-file", str(self.pki.ca), "--tls-auth-clients", "no",
                "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all",
                "--user", "default", "off",
                "--save", "", "--appendonly", "no", "--dir", str(self.root),
                "--logfile", str(self.log_path), "--daemonize", "no",
            ], stdin=subprocess.DEVNULL)
            if self._ready():
                return self
            kill(self.proc)
        raise RuntimeError(f"TLS redis-server did not start:\n{tail(self.log_path)}")

    def client(self, **kwargs: object) -> redis.Redis:
        options: dict[str, object] = {
            "host": "127.0.0.1", "port": self.port, "ssl": True, "ssl_ca_certs": str(self.pki.ca),
            "username": USER, "password": PASSWORD, "socket_timeout": 2, "socket_connect_timeout": 2,
        }
        options.update(kwargs)
        return redis.Redis(**options)  # type: ignore[arg-type]

    def _ready(self) -> bool:
        assert self.proc is not None
        client = self.client()
        try:
            return answers_ping(self.proc, client, 10)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, grace=5)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    root = tmp_path_factory.mktemp("redis-tls")
    server = TlsRedis(root, make_pki(root)).start()
    yield server
    server.stop()


def _url(server: TlsRedis, *, scheme: str = "rediss", creds: str = f"{USER}:{PASSWORD}@",
         host: str = "127.0.0.1") -> str:
    return f"{scheme}://{creds}{host}:{server.port}/0"


async def _readyz(inst: Instance) -> int:
    async with inst.http() as http:
        return (await http.get("/readyz")).status_code


async def _serves(inst: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    room = f"tls-{tag}"
    async with await open_client(inst, f"a-{tag}") as a, await open_client(inst, f"b-{tag}") as b:
        await b.join(room, since="$")
        published = await a.publish(room, {"over": "tls"}, new_client_id())
        await b.wait_for_id(room, published["id"])
        _, joined = await a.join(room, since="0")
        assert joined["replayed"] == 1


async def _refused_by_redis(inst: Instance) -> None:
    """Running, never ready, and honest about it to a publisher."""
    deadline = time.monotonic() + scaled(0.5)
    while time.monotonic() < deadline:  # observed for a while, not once
        assert await _readyz(inst) == 503
    async with inst.http() as http:
        assert (await http.get("/healthz")).status_code == 200
    async with await open_client(inst, f"p-{uuid.uuid4().hex[:8]}") as client:
        cid = new_client_id()
        with pytest.raises(ServerError) as err:
            await client.publish(f"tls-{uuid.uuid4().hex[:8]}", "lost?", cid, timeout=10)
        assert (err.value.code, err.value.ref) == ("unavailable", cid)
        assert (await client.ping())["type"] == "pong"
    assert inst.is_running()


def _clean_log(inst: Instance) -> None:
    """No password in the log, and no error beyond warnings about Redis."""
    log = inst.log_path.read_text(errors="replace")
    assert PASSWORD not in log and WRONG_PASSWORD not in log
    assert LogMark(inst, 0).problems() == []


async def test_acl_user_in_the_url_over_tls_serves(instances: ModuleInstances, tls_redis: TlsRedis) -> None:
    inst = instances.start("RT", REDIS_URL=_url(tls_redis), REDIS_CA_FILE=str(tls_redis.pki.ca))
    assert await _readyz(inst) == 200
    await _serves(inst)
    _clean_log(inst)


async def test_acl_user_from_the_environment_over_tls_serves(
    instances: ModuleInstances, tls_redis: TlsRedis
) -> None:
    inst = instances.start("RE", REDIS_URL=_url(tls_redis, creds=""), REDIS_CA_FILE=str(tls_redis.pki.ca),
                           REDIS_USERNAME=USER, REDIS_PASSWORD=PASSWORD)
    assert await _readyz(inst) == 200
    await _serves(inst)
    _clean_log(inst)


@pytest.mark.parametrize(
    ("label", "env"),
    [
        ("wrong password", lambda s: {"REDIS_URL": _url(s, creds=f"{USER}:{WRONG_PASSWORD}@"),
                                      "REDIS_CA_FILE": str(s.pki.ca)}),
        ("no CA: the server certificate cannot be verified", lambda s: {"REDIS_URL": _url(s)}),
        ("certificate for another host name", lambda s: {
            "REDIS_URL": _url(s, host="127.0.0.2"), "REDIS_CA_FILE": str(s.pki.ca)}),
        ("plain TCP to the TLS port", lambda s: {"REDIS_URL": _url(s, scheme="redis")}),
    ],
    ids=["wrong-password", "no-ca", "wrong-host", "plaintext"],
)
async def test_wrong_credentials_or_tls_settings_leave_the_instance_unready(
    instances: ModuleInstances, tls_redis: TlsRedis, label: str, env: object
) -> None:
    settings = env(tls_redis)  # type: ignore[operator]
    inst = instances.start(f"RX-{uuid.uuid4().hex[:4]}", cls=UnreadyInstance, **FAST_FAIL, **settings)
    await _refused_by_redis(inst)
    _clean_log(inst)
    # Nothing reached Redis as that instance.
    with tls_redis.client() as admin:
        assert admin.exists("sgtest:") == 0


@pytest.fixture(scope="module")
def anonymous(instances: ModuleInstances, tls_redis: TlsRedis) -> Instance:
    """TLS is fine, but no credentials: every command gets NOAUTH (the default
    user is disabled). Connecting works, so failures come later than above."""
    return instances.start("RN", cls=UnreadyInstance, REDIS_URL=_url(tls_redis, creds=""),
                           REDIS_CA_FILE=str(tls_redis.pki.ca), **FAST_FAIL)


async def test_missing_credentials_are_refused_cleanly(anonymous: Instance) -> None:
    await _refused_by_redis(anonymous)
    _clean_log(anonymous)


async def test_refused_instance_becomes_ready_once_redis_accepts_it(
    instances: ModuleInstances, tls_redis: TlsRedis
) -> None:
    """Runs last in this module: it opens the TLS redis to the default user."""
    group = [instances.start(f"RR{n}", cls=UnreadyInstance, REDIS_URL=_url(tls_redis, creds=""),
                             REDIS_CA_FILE=str(tls_redis.pki.ca), **FAST_FAIL) for n in range(3)]
    name = "streamgate_pubsub_reconnects_total"

    async def counts() -> list[float]:
        return [await metric(inst, name, instance=inst.instance_id) for inst in group]

    # Let them be refused for a while: until one stops reconnecting, at most 15 s.
    deadline = time.monotonic() + scaled(15)
    history = [await counts()]
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        history.append(await counts())
        if len(history) > 4 and any(a == b for a, b in zip(history[-5], history[-1])):
            break
    with tls_redis.client() as admin:
        admin.acl_setuser("default", enabled=True, nopass=True, keys=["*"], channels=["*"], commands=["+@all"])
        try:
            for inst in group:
                async def ready(inst: Instance = inst) -> bool:
                    return await _readyz(inst) == 200

                await async_wait_until(ready, timeout=5, interval=0.1,
                                       message=lambda: f"{inst.name} still not ready; reconnects {history[-1]}")
        finally:
            admin.acl_setuser("default", enabled=False)
