"""Settings: read from the environment (and an optional ``.env``) in one place.

Nothing else in the service reads ``os.environ``. Settings are frozen: an
instance's behaviour is fixed for its lifetime.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from streams.connection import DEFAULT_REDIS_URL, RedisSettings


# A socket's outbox must hold a frame of the largest body, and half of it a
# catch-up page of a few entries.
MIN_OUTBOUND_BYTES = 64 * 1024


class ConfigError(ValueError):
    """The configuration cannot work; the instance refuses to start."""


def dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


@dataclass(frozen=True, slots=True)
class Settings:
    redis: RedisSettings
    instance_id: str
    auth_mode: str
    jwt_secret: str | None
    jwt_public_key: str | None
    jwt_audience: str | None
    jwt_issuer: str | None
    allowed_origins: tuple[str, ...]
    durability: str
    min_replicas: int
    replica_ack_timeout_ms: int
    room_history_maxlen: int
    presence_ttl_s: float
    max_connections: int
    max_frame_bytes: int
    max_body_bytes: int
    max_joins: int
    publish_rate: float
    publish_burst: int
    control_rate: float
    control_burst: int
    key_prefix: str
    outbound_queue: int
    outbound_bytes: int
    slow_consumer_timeout_s: float
    retry_budget_s: float
    heartbeat_interval_s: float
    drain_timeout_s: float
    drain_grace_s: float
    log_format: str
    host: str
    port: int

    @property
    def any_origin(self) -> bool:
        return "*" in self.allowed_origins


def _sentinels(text: str, name: str = "REDIS_SENTINELS") -> tuple[tuple[str, int], ...]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        host, _, port = part.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}: expected host:port, got {part!r}")
        out.append((host, int(port)))
    return tuple(out)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process environment)."""
    env = dict(dotenv(Path(".env")))
    env.update(os.environ if environ is None else environ)

    def get(name: str, default: str) -> str:
        return env.get(name, default) or default

    def num(name: str, default: float, cast: type = int):  # type: ignore[no-untyped-def]
        raw = get(name, str(default))
        try:
            return cast(raw)
        except ValueError:
            raise ConfigError(f"{name}: not a number: {raw!r}") from None

    auth_mode = get("AUTH_MODE", "jwt").lower()
    if auth_mode not in ("jwt", "none"):
        raise ConfigError("AUTH_MODE must be 'jwt' or 'none'")
    secret = env.get("JWT_SECRET") or None
    public_key = env.get("JWT_PUBLIC_KEY") or None
    if public_key and not public_key.lstrip().startswith("-----BEGIN"):
        try:  # a path to a PEM file
            public_key = Path(public_key).read_text()
        except OSError as exc:
            raise ConfigError(f"JWT_PUBLIC_KEY: not a PEM key nor a readable file: {exc}") from None
    if auth_mode == "jwt" and not (secret or public_key):
        raise ConfigError("AUTH_MODE=jwt needs JWT_SECRET (or JWT_PUBLIC_KEY)")
    durability = get("DURABILITY", "leader").lower()
    if durability not in ("leader", "replica"):
        raise ConfigError("DURABILITY must be 'leader' or 'replica'")
    origins_default = "*" if auth_mode == "none" else ""
    origins = tuple(o.strip() for o in get("ALLOWED_ORIGINS", origins_default).split(",") if o.strip())

    redis = RedisSettings(
        url=get("REDIS_URL", DEFAULT_REDIS_URL),
        sentinels=_sentinels(env.get("REDIS_SENTINELS", "")),
        cluster_nodes=_sentinels(env.get("REDIS_CLUSTER_NODES", ""), "REDIS_CLUSTER_NODES"),
        master_name=get("REDIS_SENTINEL_MASTER", "mymaster"),
        sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
        username=env.get("REDIS_USERNAME") or None,
        password=env.get("REDIS_PASSWORD") or None,
        ssl_ca_file=env.get("REDIS_CA_FILE") or None,
    )
    settings = Settings(
        redis=redis,
        instance_id=get("INSTANCE_ID", f"{socket.gethostname()}-{os.getpid()}"),
        auth_mode=auth_mode,
        jwt_secret=secret,
        jwt_public_key=public_key,
        jwt_audience=env.get("JWT_AUDIENCE") or None,
        jwt_issuer=env.get("JWT_ISSUER") or None,
        allowed_origins=origins,
        durability=durability,
        min_replicas=num("MIN_REPLICAS", 1),
        replica_ack_timeout_ms=num("REPLICA_ACK_TIMEOUT_MS", 500),
        room_history_maxlen=num("ROOM_HISTORY_MAXLEN", 10000),
        presence_ttl_s=num("PRESENCE_TTL", 30, float),
        max_connections=num("MAX_CONNECTIONS", 10000),
        max_frame_bytes=num("MAX_FRAME_BYTES", 65536),
        max_body_bytes=num("MAX_BODY_BYTES", 32768),
        max_joins=num("MAX_JOINS", 100),
        publish_rate=num("PUBLISH_RATE", 50, float),
        publish_burst=num("PUBLISH_BURST", 100),
        control_rate=num("CONTROL_RATE", 100, float),
        control_burst=num("CONTROL_BURST", 500),
        key_prefix=get("KEY_PREFIX", "sg"),
        outbound_queue=num("OUTBOUND_QUEUE", 1024),
        outbound_bytes=num("OUTBOUND_BYTES", 1 << 20),
        slow_consumer_timeout_s=num("SLOW_CONSUMER_TIMEOUT", 30, float),
        retry_budget_s=num("RETRY_BUDGET", 10, float),
        heartbeat_interval_s=num("HEARTBEAT_INTERVAL", 20, float),
        drain_timeout_s=num("DRAIN_TIMEOUT", 8, float),
        drain_grace_s=num("DRAIN_GRACE", 1, float),
        log_format=get("LOG_FORMAT", "json").lower(),
        host=get("HOST", "127.0.0.1"),
        port=num("PORT", 8000),
    )
    if redis.cluster_nodes and (redis.sentinels or env.get("REDIS_SENTINEL_MASTER")):
        raise ConfigError("REDIS_CLUSTER_NODES cannot be combined with REDIS_SENTINELS "
                          "or REDIS_SENTINEL_MASTER: choose Sentinel or Cluster")
    _refuse_impossible(settings)
    if settings.room_history_maxlen < 1 or settings.outbound_queue < 8:
        raise ConfigError("ROOM_HISTORY_MAXLEN must be >= 1 and OUTBOUND_QUEUE >= 8")
    if settings.control_rate <= 0 or settings.control_burst < 1:
        # Without tokens no socket could ever join a room.
        raise ConfigError("CONTROL_RATE must be > 0 and CONTROL_BURST >= 1")
    if settings.outbound_bytes < MIN_OUTBOUND_BYTES:
        raise ConfigError(f"OUTBOUND_BYTES must be >= {MIN_OUTBOUND_BYTES} (64 KiB)")
    return settings


def _refuse_impossible(s: Settings) -> None:
    """Values that parse but cannot work: refused at start, in one line each,
    rather than met later as a socket that never gets a token or a ping
    that fires in a busy loop."""
    rules = [
        (s.log_format in ("json", "text"), "LOG_FORMAT must be 'json' or 'text'"),
        (1 <= s.port <= 65535, "PORT must be between 1 and 65535"),
        (s.max_connections >= 1, "MAX_CONNECTIONS must be >= 1"),
        (s.max_frame_bytes >= 1 and s.max_body_bytes >= 1,
         "MAX_FRAME_BYTES and MAX_BODY_BYTES must be >= 1"),
        (s.max_joins >= 1, "MAX_JOINS must be >= 1"),
        (s.publish_rate > 0 and s.publish_burst >= 1,
         "PUBLISH_RATE must be > 0 and PUBLISH_BURST >= 1"),
        (s.heartbeat_interval_s > 0, "HEARTBEAT_INTERVAL must be > 0 seconds"),
        (s.presence_ttl_s > 0, "PRESENCE_TTL must be > 0 seconds"),
        (s.retry_budget_s > 0, "RETRY_BUDGET must be > 0 seconds"),
        (s.slow_consumer_timeout_s > 0, "SLOW_CONSUMER_TIMEOUT must be > 0 seconds"),
        (s.drain_timeout_s > 0 and s.drain_grace_s >= 0,
         "DRAIN_TIMEOUT must be > 0 and DRAIN_GRACE >= 0 seconds"),
        (s.durability != "replica" or s.min_replicas >= 1,
         "MIN_REPLICAS must be >= 1 with DURABILITY=replica (0 would confirm nothing)"),
        (s.durability != "replica" or s.replica_ack_timeout_ms >= 1,
         "REPLICA_ACK_TIMEOUT_MS must be >= 1 with DURABILITY=replica"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    for name, value in (("PUBLISH_RATE", s.publish_rate), ("CONTROL_RATE", s.control_rate),
                        ("PRESENCE_TTL", s.presence_ttl_s), ("RETRY_BUDGET", s.retry_budget_s),
                        ("HEARTBEAT_INTERVAL", s.heartbeat_interval_s),
                        ("SLOW_CONSUMER_TIMEOUT", s.slow_consumer_timeout_s),
                        ("DRAIN_TIMEOUT", s.drain_timeout_s), ("DRAIN_GRACE", s.drain_grace_s)):
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number")

