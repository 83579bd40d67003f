"""Settings from the environment (and ./.env)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import ConfigError, load_settings
from streams.connection import RedisSettings

SECRET = "unit-secret-0123456789-abcdefghijklmnopqrstuvwxyz"

# ``str.isdigit`` is true for superscripts such as "²" that ``int`` rejects, so
# the check before ``int(port)`` lets a plain ValueError through.
SENTINEL_DIGITS = "app/config.py _sentinels: port.isdigit() accepts '²'; int() then raises ValueError, not ConfigError"


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    return tmp_path


def test_defaults_in_none_mode() -> None:
    s = load_settings({"AUTH_MODE": "none"})
    assert s.auth_mode == "none"
    assert s.jwt_secret is None and s.jwt_public_key is None
    assert s.allowed_origins == ("*",) and s.any_origin
    assert s.redis.url == RedisSettings().url  # the contract's default, localhost
    assert s.redis.sentinels == ()
    assert s.redis.master_name == "mymaster"
    assert s.redis.password is None and s.redis.username is None
    assert s.durability == "leader"
    assert (s.min_replicas, s.replica_ack_timeout_ms) == (1, 500)
    assert s.room_history_maxlen == 10000
    assert s.presence_ttl_s == 30
    assert s.max_connections == 10000
    assert s.max_frame_bytes == 65536
    assert (s.publish_rate, s.publish_burst) == (50, 100)
    # Room for a client that joins MAX_JOINS rooms and acks each of them at once.
    assert (s.control_rate, s.control_burst) == (100, 500)
    assert s.control_burst >= 2 * s.max_joins
    assert s.key_prefix == "sg"
    assert s.instance_id  # host name + pid
    assert (s.host, s.port) == ("127.0.0.1", 8000)


def test_defaults_in_jwt_mode() -> None:
    s = load_settings({"JWT_SECRET": SECRET})
    assert s.auth_mode == "jwt"
    assert s.jwt_secret == SECRET
    assert s.allowed_origins == ()  # Origin-less clients only
    assert not s.any_origin


def test_public_key_alone_is_enough_for_jwt_mode() -> None:
    s = load_settings({"JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----"})
    assert s.jwt_secret is None and s.jwt_public_key


@pytest.mark.parametrize("env", [{}, {"AUTH_MODE": "jwt"}, {"AUTH_MODE": "JWT", "JWT_SECRET": ""}])
def test_jwt_mode_without_key_refuses_to_start(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(env)


def test_explicit_values() -> None:
    s = load_settings(
        {
            "AUTH_MODE": "None",
            "REDIS_URL": "rediss://u:p@redis.example:6380/2",
            "INSTANCE_ID": "i-7",
            "ALLOWED_ORIGINS": " https://a.example , https://b.example,, ",
            "DURABILITY": "REPLICA",
            "MIN_REPLICAS": "2",
            "REPLICA_ACK_TIMEOUT_MS": "250",
            "ROOM_HISTORY_MAXLEN": "1",
            "PRESENCE_TTL": "2.5",
            "MAX_CONNECTIONS": "3",
            "MAX_FRAME_BYTES": "1024",
            "PUBLISH_RATE": "0.5",
            "PUBLISH_BURST": "1",
            "CONTROL_RATE": "2.5",
            "CONTROL_BURST": "7",
            "KEY_PREFIX": "sgtest",
            "OUTBOUND_QUEUE": "8",
            "OUTBOUND_BYTES": "65536",
            "HOST": "0.0.0.0",
            "PORT": "9000",
        }
    )
    assert s.auth_mode == "none"
    assert s.redis.url == "rediss://u:p@redis.example:6380/2"
    assert s.instance_id == "i-7"
    assert s.allowed_origins == ("https://a.example", "https://b.example")
    assert not s.any_origin
    assert s.durability == "replica"
    assert (s.min_replicas, s.replica_ack_timeout_ms, s.room_history_maxlen) == (2, 250, 1)
    assert s.presence_ttl_s == 2.5
    assert (s.max_connections, s.max_frame_bytes) == (3, 1024)
    assert (s.publish_rate, s.publish_burst) == (0.5, 1)
    assert (s.control_rate, s.control_burst) == (2.5, 7)
    assert (s.key_prefix, s.outbound_queue, s.outbound_bytes) == ("sgtest", 8, 65536)
    assert (s.host, s.port) == ("0.0.0.0", 9000)


def test_empty_values_fall_back_to_defaults() -> None:
    s = load_settings({"AUTH_MODE": "", "JWT_SECRET": SECRET, "MAX_CONNECTIONS": "", "DURABILITY": ""})
    assert s.auth_mode == "jwt"
    assert s.max_connections == 10000
    assert s.durability == "leader"


def test_outbox_bytes_default_to_one_mebibyte() -> None:
    assert load_settings({"AUTH_MODE": "none"}).outbound_bytes == 2**20


def test_settings_are_frozen() -> None:
    s = load_settings({"AUTH_MODE": "none"})
    with pytest.raises(ValidationError, match="frozen"):
        s.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MIN_REPLICAS", "one"),
        ("REPLICA_ACK_TIMEOUT_MS", "0.5"),
        ("ROOM_HISTORY_MAXLEN", "1e4"),
        ("PRESENCE_TTL", "30s"),
        ("MAX_CONNECTIONS", "10k"),
        ("MAX_FRAME_BYTES", "64KiB"),
        ("PUBLISH_RATE", "fast"),
        ("PUBLISH_BURST", "1.5"),
        ("CONTROL_RATE", "often"),
        ("CONTROL_BURST", "2.5"),
        ("OUTBOUND_QUEUE", "x"),
        ("OUTBOUND_BYTES", "1MiB"),
        ("SLOW_CONSUMER_TIMEOUT", "soon"),
        ("RETRY_BUDGET", "-"),
        ("HEARTBEAT_INTERVAL", "20 s"),
        ("DRAIN_TIMEOUT", "8,5"),
        ("PORT", "http"),
    ],
)
def test_bad_numbers(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({"AUTH_MODE": "none", name: value})


@pytest.mark.parametrize(
    "env",
    [
        {"AUTH_MODE": "oauth"},
        {"AUTH_MODE": "none", "DURABILITY": "quorum"},
        {"AUTH_MODE": "none", "ROOM_HISTORY_MAXLEN": "0"},
        {"AUTH_MODE": "none", "OUTBOUND_QUEUE": "7"},
        {"AUTH_MODE": "none", "CONTROL_RATE": "0"},
        {"AUTH_MODE": "none", "CONTROL_BURST": "0"},
        {"AUTH_MODE": "none", "OUTBOUND_BYTES": "65535"},
    ],
)
def test_impossible_settings(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(env)


@pytest.mark.parametrize(
    ("text", "sentinels"),
    [
        ("", ()),
        ("s1:26379", (("s1", 26379),)),
        ("s1:26379,s2:26380,s3:26381", (("s1", 26379), ("s2", 26380), ("s3", 26381))),
        (" s1:26379 , s2:26380 ,", (("s1", 26379), ("s2", 26380))),
        ("10.0.0.1:1,127.0.0.1:65535", (("10.0.0.1", 1), ("127.0.0.1", 65535))),
        ("::1:26379", (("::1", 26379),)),  # the last colon splits
    ],
)
def test_sentinels(text: str, sentinels: tuple[tuple[str, int], ...]) -> None:
    s = load_settings({"AUTH_MODE": "none", "REDIS_SENTINELS": text, "REDIS_SENTINEL_MASTER": "main"})
    assert s.redis.sentinels == sentinels
    assert s.redis.master_name == "main"


@pytest.mark.parametrize(
    "text",
    [
        "s1",
        "s1:",
        ":26379",
        "s1:port",
        "s1:-1",
        "s1:26379,s2",
        pytest.param("s1:\u00b2", marks=()),
    ],
)
def test_bad_sentinels(text: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        load_settings({"AUTH_MODE": "none", "REDIS_SENTINELS": text})


def test_dotenv_adds_to_environ_and_loses_to_it(in_empty_dir: Path) -> None:
    (in_empty_dir / ".env").write_text(
        "# a comment\n"
        "\n"
        "AUTH_MODE=none\n"
        "KEY_PREFIX = fromfile\n"
        "INSTANCE_ID='quoted'\n"
        'HOST="10.1.2.3"\n'
        "PORT=1234\n"
        "not a setting\n"
    )
    s = load_settings({"PORT": "4321"})
    assert s.auth_mode == "none"
    assert s.key_prefix == "fromfile"
    assert s.instance_id == "quoted"
    assert s.host == "10.1.2.3"
    assert s.port == 4321  # the environment wins


def test_explicit_environ_ignores_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_PREFIX", "from-process")
    assert load_settings({"AUTH_MODE": "none"}).key_prefix == "sg"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"PUBLISH_RATE": "-5"}, "PUBLISH_RATE"),
        ({"PUBLISH_BURST": "0"}, "PUBLISH_BURST"),
        ({"MAX_CONNECTIONS": "-1"}, "MAX_CONNECTIONS"),
        ({"PORT": "99999"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL"),
        ({"DURABILITY": "replica", "MIN_REPLICAS": "0"}, "MIN_REPLICAS"),
        ({"DURABILITY": "replica", "REPLICA_ACK_TIMEOUT_MS": "0"}, "REPLICA_ACK_TIMEOUT_MS"),
        ({"PRESENCE_TTL": "0"}, "PRESENCE_TTL"),
        ({"RETRY_BUDGET": "-1"}, "RETRY_BUDGET"),
        ({"SLOW_CONSUMER_TIMEOUT": "0"}, "SLOW_CONSUMER_TIMEOUT"),
        ({"DRAIN_TIMEOUT": "0"}, "DRAIN_TIMEOUT"),
        ({"DRAIN_GRACE": "-1"}, "DRAIN_GRACE"),
        ({"MAX_JOINS": "0"}, "MAX_JOINS"),
        ({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES"),
        ({"PUBLISH_RATE": "nan"}, "PUBLISH_RATE"),
        ({"HEARTBEAT_INTERVAL": "inf"}, "HEARTBEAT_INTERVAL"),
    ],
)
def test_values_that_parse_but_cannot_work_are_refused_in_one_line(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        load_settings({"AUTH_MODE": "none", **env})
    assert "\n" not in str(refused.value)


def test_min_replicas_zero_is_fine_without_replica_durability() -> None:
    assert load_settings({"AUTH_MODE": "none", "MIN_REPLICAS": "0"}).min_replicas == 0



def test_secrets_stay_out_of_the_settings_repr() -> None:
    s = load_settings({"JWT_SECRET": SECRET, "REDIS_PASSWORD": "redis-pw-123", "REDIS_SENTINEL_PASSWORD": "s-pw-456"})
    assert s.jwt_secret == SECRET and s.redis.password == "redis-pw-123"
    shown = repr(s)
    assert SECRET not in shown and "redis-pw-123" not in shown and "s-pw-456" not in shown


def test_every_setting_is_documented_with_its_variable_and_default() -> None:
    from app.config import Settings, documented

    rows = list(documented())
    assert [name for name, _, _ in rows] == [str(f.validation_alias) for f in Settings.model_fields.values()]
    assert all(name.isupper() and doc for name, _, doc in rows)
    assert dict((name, default) for name, default, _ in rows)["OUTBOUND_BYTES"] == "1048576"


def test_cluster_nodes_select_cluster_mode() -> None:
    s = load_settings({"AUTH_MODE": "none", "REDIS_CLUSTER_NODES": "10.0.0.1:7000, 10.0.0.2:7001"})
    assert s.redis.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert load_settings({"AUTH_MODE": "none"}).redis.cluster_nodes == ()


@pytest.mark.parametrize("extra", [{"REDIS_SENTINELS": "127.0.0.1:26379"},
                                   {"REDIS_SENTINEL_MASTER": "mymaster"}])
def test_cluster_and_sentinel_are_refused_together(extra: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="REDIS_CLUSTER_NODES"):
        load_settings({"AUTH_MODE": "none", "REDIS_CLUSTER_NODES": "127.0.0.1:7000", **extra})


def test_bad_cluster_node_is_refused() -> None:
    with pytest.raises(ConfigError, match="REDIS_CLUSTER_NODES: expected host:port"):
        load_settings({"AUTH_MODE": "none", "REDIS_CLUSTER_NODES": "127.0.0.1"})
