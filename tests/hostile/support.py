"""Helpers for the hostile tests: metrics, log checks, key material, instances
that may legitimately never become ready."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support import Instance, InstanceStartError, wait_until
from tests.support.timeouts import scaled

# -- metrics -------------------------------------------------------------------


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0.0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
        if m is None or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return 0.0


async def metric(inst: Instance, name: str, **labels: str) -> float:
    async with inst.http() as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    return metric_value(response.text, name, **labels)


# -- logs ----------------------------------------------------------------------


@dataclass
class LogMark:
    """A position in an instance's log, to check only what was written after it."""

    inst: Instance
    offset: int

    @classmethod
    def now(cls, inst: Instance) -> LogMark:
        try:
            return cls(inst, inst.log_path.stat().st_size)
        except FileNotFoundError:
            return cls(inst, 0)

    def text(self) -> str:
        with self.inst.log_path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def problems(self, ignore: tuple[str, ...] = ()) -> list[str]:
        """Log lines since the mark that report an error or an exception.

        ``ignore``: event texts of records that are known and asserted elsewhere.
        """
        bad = []
        for line in self.text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                event = str(entry.get("event", ""))
                if any(event.startswith(i) for i in ignore):
                    continue
                if entry.get("level") in ("error", "critical") or entry.get("exception"):
                    bad.append(line[:2000])
                    continue
            if "Traceback" in line or "Exception in ASGI" in line:
                bad.append(line[:2000])
        return bad


# -- keys and tokens -------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str


def rsa_keys() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pair(key)


def ec_keys(curve: ec.EllipticCurve | None = None) -> KeyPair:
    return _pair(ec.generate_private_key(curve or ec.SECP256R1()))


def _pair(key: Any) -> KeyPair:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return KeyPair(private, public)


def claims(sub: str, ttl: float = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "exp": now + int(ttl), "iat": now, **extra}


def signed(payload: dict[str, Any], key: str, alg: str, headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256_with_raw_key(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token whose HMAC key is any bytes, e.g. a public key's PEM text:
    the classic algorithm-confusion forgery (libraries refuse to build it)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode()
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


# -- instances -------------------------------------------------------------------


class UnreadyInstance(Instance):
    """An instance that is expected to run without ever being ready (its Redis
    refuses it): start() returns once /healthz answers; /readyz is the test's
    business."""

    def _wait_ready(self, timeout: float) -> None:
        proc = self.proc
        assert proc is not None
        with httpx.Client(base_url=self.url, timeout=scaled(2)) as http:

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise InstanceStartError(f"instance {self.name} exited with {proc.returncode}\n{self.log_tail()}")
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            try:
                wait_until(healthy, timeout, interval=0.05)
            except AssertionError:
                raise InstanceStartError(f"instance {self.name} never answered /healthz\n{self.log_tail()}") from None


def write_pem(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
