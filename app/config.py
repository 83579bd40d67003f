"""Settings: read from the environment (and an optional ``.env``) in one place.

Nothing else in the service reads ``os.environ``. ``Settings`` is one
pydantic-settings model: each field names its variable (the alias), its
default and its bounds, so adding a setting is one field here (plus a rule in
``_cross_checks`` when it depends on another). Every value that cannot work
is refused at start, before anything binds or talks to Redis, with
``ConfigError`` in one line that names the variable. Settings are frozen: an
instance's behaviour is fixed for its lifetime.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource,
                               SettingsConfigDict)

from streams.connection import DEFAULT_REDIS_URL, RedisSettings

# A socket's outbox must hold a frame of the largest body, and half of it a
# catch-up page of a few entries.
MIN_OUTBOUND_BYTES = 64 * 1024

# Values never echoed in an error line.
_SECRET_HINTS = ("SECRET", "PASSWORD", "PUBLIC_KEY")


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


def _env(name: str, default: Any, doc: str, shown: str | None = None, **bounds: Any) -> Any:
    """A field read from variable ``name``; ``shown`` is the default as
    ``--help`` prints it when it is computed at start."""
    extra = {"shown": shown} if shown is not None else None
    factory = default if callable(default) else None
    if factory is not None:
        return Field(default_factory=factory, validation_alias=name, description=doc,
                     json_schema_extra=extra, **bounds)
    return Field(default, validation_alias=name, description=doc, json_schema_extra=extra, **bounds)


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


Seconds = Annotated[float, Field(allow_inf_nan=False)]
Origins = Annotated[tuple[str, ...], NoDecode]
Sentinels = Annotated[tuple[tuple[str, int], ...], NoDecode]


class Settings(BaseSettings):
    """Every setting of an instance, validated as a whole."""

    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, env_ignore_empty=True,
                                      extra="ignore", validate_default=True)

    redis_url: str = _env("REDIS_URL", DEFAULT_REDIS_URL, "standalone Redis, redis:// or rediss://")
    redis_sentinels: Sentinels = _env(
        "REDIS_SENTINELS", (), "host:port,...; when set, the master is found through Sentinel", shown="")
    redis_sentinel_master: str = _env("REDIS_SENTINEL_MASTER", "mymaster", "Sentinel master name")
    redis_cluster_nodes: Sentinels = _env(
        "REDIS_CLUSTER_NODES", (), "host:port,... seed nodes; when set, rooms are sharded over a Redis Cluster",
        shown="")
    redis_sentinel_password: str | None = _env(
        "REDIS_SENTINEL_PASSWORD", None, "password for the sentinels themselves", repr=False)
    redis_username: str | None = _env("REDIS_USERNAME", None, "Redis ACL user")
    redis_password: str | None = _env("REDIS_PASSWORD", None, "Redis password", repr=False)
    redis_ca_file: str | None = _env("REDIS_CA_FILE", None, "CA bundle that verifies a rediss:// REDIS_URL")
    instance_id: str = _env(
        "INSTANCE_ID", _instance_id, "this instance's name in metrics, logs and presence", shown="<hostname>-<pid>")
    auth_mode: Literal["jwt", "none"] = _env(
        "AUTH_MODE", "jwt", "jwt, or none (development: identity from ?user=)")
    jwt_secret: str | None = _env("JWT_SECRET", None, "HS256 key (jwt mode needs it or JWT_PUBLIC_KEY)", repr=False)
    jwt_public_key: str | None = _env(
        "JWT_PUBLIC_KEY", None, "PEM public key as text or a file path (RS256/ES256)")
    jwt_audience: str | None = _env("JWT_AUDIENCE", None, "when set, tokens must carry this aud")
    jwt_issuer: str | None = _env("JWT_ISSUER", None, "when set, tokens must carry this iss")
    allowed_origins: Origins = _env(
        "ALLOWED_ORIGINS", (), "comma list of Origin values allowed to open a socket, * = any",
        shown="* with AUTH_MODE=none, else empty")
    durability: Literal["leader", "replica"] = _env(
        "DURABILITY", "leader", "leader, or replica (confirm after WAIT saw MIN_REPLICAS)")
    min_replicas: int = _env(
        "MIN_REPLICAS", 1, "replicas that must confirm a publish with DURABILITY=replica", ge=0)
    replica_ack_timeout_ms: int = _env(
        "REPLICA_ACK_TIMEOUT_MS", 500, "milliseconds to wait for those replicas", ge=0)
    room_history_maxlen: int = _env(
        "ROOM_HISTORY_MAXLEN", 10000, "entries kept per room stream (approximate trim)", ge=1)
    presence_ttl_s: Seconds = _env(
        "PRESENCE_TTL", 30.0, "seconds before a crashed instance's users leave presence", gt=0)
    max_connections: int = _env(
        "MAX_CONNECTIONS", 10000, "sockets per instance; the next is closed with 1013", ge=1)
    max_frame_bytes: int = _env(
        "MAX_FRAME_BYTES", 65536, "largest client frame, and HTTP POST request read", ge=1)
    max_body_bytes: int = _env(
        "MAX_BODY_BYTES", 32768, "largest message body (compact JSON) in a socket publish", ge=1)
    max_joins: int = _env("MAX_JOINS", 100, "rooms one socket may be in at once", ge=1)
    publish_rate: Seconds = _env("PUBLISH_RATE", 50.0, "publish/direct/broadcast per second per socket", gt=0)
    publish_burst: int = _env("PUBLISH_BURST", 100, "publish bucket size", ge=1)
    control_rate: Seconds = _env("CONTROL_RATE", 100.0, "join/leave/ack per second per socket", gt=0)
    control_burst: int = _env("CONTROL_BURST", 500, "control bucket size", ge=1)
    key_prefix: str = _env("KEY_PREFIX", "sg", "prefix of every Redis key and channel")
    outbound_queue: int = _env(
        "OUTBOUND_QUEUE", 1024, "message frames queued per socket before catch-up", ge=8)
    outbound_bytes: int = _env("OUTBOUND_BYTES", 1 << 20, "bytes queued per socket", ge=MIN_OUTBOUND_BYTES)
    slow_consumer_timeout_s: Seconds = _env(
        "SLOW_CONSUMER_TIMEOUT", 30.0, "seconds a socket write may make no progress (then 4408)", gt=0)
    retry_budget_s: Seconds = _env(
        "RETRY_BUDGET", 10.0, "seconds a Redis call is retried before unavailable", gt=0)
    heartbeat_interval_s: Seconds = _env(
        "HEARTBEAT_INTERVAL", 20.0, "WebSocket ping interval and pong timeout, seconds", gt=0)
    drain_timeout_s: Seconds = _env("DRAIN_TIMEOUT", 8.0, "seconds open sockets get to close with 1012", gt=0)
    drain_grace_s: Seconds = _env(
        "DRAIN_GRACE", 1.0, "seconds between SIGTERM and closing open sockets", ge=0)
    log_format: Literal["json", "text"] = _env(
        "LOG_FORMAT", "json", "json (one object per line, tokens redacted) or text")
    build_sha: str | None = _env(
        "BUILD_SHA", None, "the commit this build was made from, for streamgate_build_info "
        "(images and wheels have no git checkout to ask)", shown="<git rev-parse HEAD>")
    host: str = _env("HOST", "127.0.0.1", "listen address of streamgate serve")
    port: int = _env("PORT", 8000, "listen port of streamgate serve", ge=1, le=65535)

    @property
    def any_origin(self) -> bool:
        return "*" in self.allowed_origins

    @property
    def redis(self) -> RedisSettings:
        """The Redis layer's own settings (streams/ knows nothing of this model)."""
        return RedisSettings(url=self.redis_url, sentinels=self.redis_sentinels,
                             cluster_nodes=self.redis_cluster_nodes,
                             master_name=self.redis_sentinel_master,
                             sentinel_password=self.redis_sentinel_password, username=self.redis_username,
                             password=self.redis_password, ssl_ca_file=self.redis_ca_file)

    @field_validator("auth_mode", "durability", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinels(cls, value: Any) -> Any:
        return _sentinels(value) if isinstance(value, str) else value

    @field_validator("redis_cluster_nodes", mode="before")
    @classmethod
    def _cluster_nodes(cls, value: Any) -> Any:
        return _sentinels(value, "REDIS_CLUSTER_NODES") if isinstance(value, str) else value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        return tuple(o.strip() for o in value.split(",") if o.strip()) if isinstance(value, str) else value

    @field_validator("jwt_public_key")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value and not value.lstrip().startswith("-----BEGIN"):
            try:  # a path to a PEM file
                return Path(value).read_text()
            except OSError as exc:
                raise ValueError(f"not a PEM key nor a readable file: {exc}") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _origins_default(cls, data: Any) -> Any:
        """Any origin by default only where no token is asked for anyway."""
        if isinstance(data, dict) and not data.get("ALLOWED_ORIGINS"):
            mode = str(data.get("AUTH_MODE") or "jwt").lower()
            data = {**data, "ALLOWED_ORIGINS": "*" if mode == "none" else ""}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        """Values fine alone that cannot work together: refused at start
        rather than met later as a publish nothing confirms."""
        rules = [
            (self.auth_mode != "jwt" or bool(self.jwt_secret or self.jwt_public_key),
             "AUTH_MODE=jwt needs JWT_SECRET (or JWT_PUBLIC_KEY)"),
            (self.durability != "replica" or self.min_replicas >= 1,
             "MIN_REPLICAS must be >= 1 with DURABILITY=replica (0 would confirm nothing)"),
            (self.durability != "replica" or self.replica_ack_timeout_ms >= 1,
             "REPLICA_ACK_TIMEOUT_MS must be >= 1 with DURABILITY=replica"),
            (not self.redis_cluster_nodes
             or not (self.redis_sentinels or "redis_sentinel_master" in self.model_fields_set),
             "REDIS_CLUSTER_NODES cannot be combined with REDIS_SENTINELS "
             "or REDIS_SENTINEL_MASTER: choose Sentinel or Cluster"),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigError(message)
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the environment (over ./.env, read by :func:`dotenv` as before)."""
        return init_settings, _Environment(settings_cls)


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("streamgate_environ", default=None)


class _Environment(EnvSettingsSource):
    """The process environment over ``./.env``, or the mapping given to
    :func:`load_settings` (tests pass one so the process's is not read)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        given = _ENVIRON.get()
        merged = {**dotenv(Path(".env")), **(os.environ if given is None else given)}
        return {k: v for k, v in merged.items() if v != ""}


@contextmanager
def _environ(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default: the process environment) over
    ``./.env``; ``ConfigError`` in one line naming the variable otherwise."""
    try:
        with _environ(environ):
            return Settings()
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """Every problem of ``exc`` on one line, each led by its variable."""
    parts = []
    for err in exc.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        if not name or message.startswith(name):  # our own rule says it all
            parts.append(message)
            continue
        if not any(h in name for h in _SECRET_HINTS) and isinstance(value, str) and len(value) <= 64:
            message = f"{message} (got {value!r})"
        parts.append(f"{name}: {message}")
    return "; ".join(parts).replace("\n", " ")


def documented() -> Iterator[tuple[str, str, str]]:
    """(variable, default as shown, description) of every setting, for ``--help``."""
    for field in Settings.model_fields.values():
        yield str(field.validation_alias), _shown_default(field), field.description or ""


def _shown_default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown" in extra:
        return str(extra["shown"])
    default = field.get_default(call_default_factory=False)
    if default is None or default == ():
        return ""
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


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
