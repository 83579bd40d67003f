"""/metrics: real traffic through a real instance moves the right series.

Each test reads /metrics before and after driving clients, and compares the
deltas with what the clients themselves saw (frames received, close codes,
refusals). Faults go through the instance's own redis-server (dedicated to
this module), so `CLIENT KILL` touches nothing else.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import Counter
from importlib import metadata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import InstanceFactory
from tests.support import (
    Instance,
    RedisServer,
    WsClient,
    async_wait_until,
    new_client_id,
    open_client,
    scaled,
    try_connect,
)
from tests.support.http import history_ids
from tests.support.ids import assert_ids_equal
from tests.support.tokens import SECRET, make_token

# Every metric the service must expose, with its type.
EXPECTED_METRICS = {
    "websocket_connections": "gauge",
    "websocket_messages_sent_total": "counter",
    "websocket_messages_received_total": "counter",
    "websocket_connection_duration_seconds": "histogram",
    "streamgate_publish_latency_seconds": "histogram",
    "streamgate_delivery_latency_seconds": "histogram",
    "streamgate_replayed_messages_total": "counter",
    "streamgate_replay_duration_seconds": "histogram",
    "streamgate_gap_filled_messages_total": "counter",
    "streamgate_pubsub_reconnects_total": "counter",
    "streamgate_redis_failovers_total": "counter",
    "streamgate_redis_retries_total": "counter",
    "streamgate_unavailable_total": "counter",
    "streamgate_pubsub_canary_missed_total": "counter",
    "streamgate_slow_consumer_closes_total": "counter",
    "streamgate_refused_connections_total": "counter",
    "streamgate_rate_limited_total": "counter",
    "streamgate_local_rooms": "gauge",
    "streamgate_outbound_queue_depth": "gauge",
    "streamgate_tasks": "gauge",
    "streamgate_ready": "gauge",
    "streamgate_draining": "gauge",
    "streamgate_shards_unhealthy": "gauge",
    "streamgate_unrecovered_joins_total": "counter",
    "streamgate_error_frames_total": "counter",
    "streamgate_http_responses_total": "counter",
    "streamgate_catching_up_sockets": "gauge",
    "streamgate_build_info": "gauge",
}
# The process itself, from prometheus_client's process and platform collectors.
PROCESS_METRICS = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "python_info": "gauge",
}
# Bounded label names only: never a user or a room.
ALLOWED_LABELS = {"instance", "type", "reason", "le", "code", "route", "method", "status",
                  "version", "git_sha"}
# Collector series that describe the process, labelled by Prometheus's own
# `instance` (the scrape target) only.
PROCESS_PREFIXES = ("process_", "python_")

needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")

ORIGIN = "https://app.example"
PUBLISH_BURST = 30
MAX_CONNECTIONS = 8


# -- reading /metrics ------------------------------------------------------------


@dataclass
class Snapshot:
    """One scrape: the raw text, every sample, and the declared family types."""

    text: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        snap = cls(text)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                snap.samples.append((s.name, dict(s.labels), float(s.value)))
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(maxsplit=3)
                snap.types[name] = kind
        return snap

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels`."""
        return sum(
            v for n, lab, v in self.samples
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    def exposed_names(self) -> set[str]:
        """Names a PromQL query can use: counters and gauges as declared,
        histograms through their _bucket, _count and _sum series."""
        names: set[str] = set()
        for name, kind in self.types.items():
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            else:
                names.add(name)
        return names


async def scrape(inst: Instance) -> Snapshot:
    async with inst.http() as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Snapshot.parse(response.text)


Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


async def expect_deltas(
    inst: Instance, before: Snapshot, expected: dict[Key, float], timeout: float = 5.0
) -> Snapshot:
    """Poll /metrics until every series moved by exactly its expected delta."""
    last: Snapshot | None = None

    def wrong(snap: Snapshot) -> list[str]:
        out = []
        for (name, labels), delta in expected.items():
            got = snap.value(name, **dict(labels)) - before.value(name, **dict(labels))
            if abs(got - delta) > 1e-9:
                out.append(f"{name}{dict(labels)}: moved by {got:g}, expected {delta:g}")
        return out

    async def settled() -> bool:
        nonlocal last
        last = await scrape(inst)
        return not wrong(last)

    try:
        await async_wait_until(settled, timeout, interval=0.05)
    except AssertionError:
        assert last is not None
        raise AssertionError("metrics did not move as expected:\n  " + "\n  ".join(wrong(last))) from None
    assert last is not None
    return last


async def wait_metric(inst: Instance, check: Callable[[Snapshot], bool], timeout: float, what: str) -> Snapshot:
    found: Snapshot | None = None

    async def ok() -> bool:
        nonlocal found
        found = await scrape(inst)
        return check(found)

    await async_wait_until(ok, timeout, interval=0.05, message=what)
    assert found is not None
    return found


def promtool_check_metrics(text: str) -> None:
    run = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=scaled(30))
    assert run.returncode == 0, f"promtool check metrics failed:\n{run.stdout}{run.stderr}"


def frame_types(clients: list[WsClient]) -> Counter[str]:
    """Frames the clients received, by type (message frames included)."""
    return Counter(f.get("type") for c in clients for f in c.log if isinstance(f, dict))


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("metrics-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def metrics_factory(metrics_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstanceFactory]:
    factory = InstanceFactory(metrics_redis.url, tmp_path_factory.mktemp("metrics-instances"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def metered(metrics_factory: InstanceFactory) -> Instance:
    """JWT mode, one allowed Origin, a small publish burst and connection cap."""
    return metrics_factory.start(
        "M",
        AUTH_MODE="jwt",
        JWT_SECRET=SECRET,
        ALLOWED_ORIGINS=ORIGIN,
        PUBLISH_RATE="1",
        PUBLISH_BURST=str(PUBLISH_BURST),
        MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        DRAIN_GRACE="0",
    )


@pytest.fixture
async def metrics_redis_client(metrics_redis: RedisServer) -> Any:
    client = aioredis.Redis(host="127.0.0.1", port=metrics_redis.port, decode_responses=True)
    yield client
    await client.aclose()


async def connect(inst: Instance, user: str, **kwargs: Any) -> WsClient:
    return await open_client(inst, token=make_token(user), name=user, **kwargs)


async def close_all(inst: Instance, clients: list[WsClient], baseline: float) -> None:
    """Close the clients and wait until the instance counted them gone."""
    for c in clients:
        await c.close()
    await wait_metric(inst, lambda s: s.value("websocket_connections") == baseline, 5,
                      f"websocket_connections back to {baseline}")


# -- tests -------------------------------------------------------------------------------


async def test_connections_gauge_and_duration_follow_clients(metered: Instance, uid: Callable[[str], str]) -> None:
    before = await scrape(metered)
    base = before.value("websocket_connections")
    clients = [await connect(metered, uid(f"c{n}")) for n in range(3)]
    try:
        await wait_metric(metered, lambda s: s.value("websocket_connections") == base + 3, 5,
                          "three more connections counted")
    finally:
        await close_all(metered, clients, base)
    after = await expect_deltas(metered, before, {
        key("websocket_connection_duration_seconds_count"): 3,
        key("websocket_messages_sent_total", type="welcome"): 3,
    })
    # Three connections of well under a second each.
    assert after.value("websocket_connection_duration_seconds_bucket", le="1.0") - before.value(
        "websocket_connection_duration_seconds_bucket", le="1.0") == 3
    assert after.value("websocket_connections", instance=metered.instance_id) == base


async def test_frames_counted_by_type_and_message_frames_equal_deliveries(
    metered: Instance, uid: Callable[[str], str], room: str
) -> None:
    before = await scrape(metered)
    base = before.value("websocket_connections")
    clients = [await connect(metered, uid(n)) for n in ("pub", "s1", "s2")]
    pub, s1, s2 = clients
    try:
        for c in clients:
            await c.join(room, since="$")
        during = await scrape(metered)
        assert during.value("streamgate_local_rooms") == before.value("streamgate_local_rooms") + 1
        published = await pub.publish_many(room, [{"n": n} for n in range(5)])
        ids = [f["id"] for f in published]
        for c in clients:
            await c.wait_for_id(room, ids[-1])
        for c in clients:
            await c.ping()
        await s2.send_text("{not json")
        await s2.expect("error")
        await s1.ack(room, ids[-1])
        await s1.leave(room)
        deliveries = sum(len(c.ids[room]) for c in clients)
        assert deliveries == 15
        await expect_deltas(metered, before, {
            key("websocket_messages_received_total", type="join"): 3,
            key("websocket_messages_received_total", type="publish"): 5,
            key("websocket_messages_received_total", type="ping"): 3,
            key("websocket_messages_received_total", type="invalid"): 1,
            key("websocket_messages_received_total", type="ack"): 1,
            key("websocket_messages_received_total", type="leave"): 1,
            key("websocket_messages_sent_total", type="welcome"): 3,
            key("websocket_messages_sent_total", type="published"): 5,
            key("websocket_messages_sent_total", type="pong"): 3,
            key("websocket_messages_sent_total", type="error"): 1,
            key("websocket_messages_sent_total", type="left"): 1,
            # Every live message frame a client received, counted once.
            key("websocket_messages_sent_total", type="message"): deliveries,
            key("streamgate_publish_latency_seconds_count"): 5,
            # One hand-over (one latency sample) per message on this instance.
            key("streamgate_delivery_latency_seconds_count"): 5,
        })
    finally:
        await close_all(metered, clients, base)
    after = await scrape(metered)
    assert after.value("streamgate_local_rooms") == before.value("streamgate_local_rooms")


async def test_replay_on_join_with_since_is_counted(metered: Instance, uid: Callable[[str], str], room: str) -> None:
    base = (await scrape(metered)).value("websocket_connections")
    pub = await connect(metered, uid("pub"))
    late: WsClient | None = None
    try:
        ids = [f["id"] for f in await pub.publish_many(room, [{"n": n} for n in range(6)])]
        before = await scrape(metered)
        late = await connect(metered, uid("late"))
        replay, joined = await late.join(room, since=ids[1])
        assert [m["id"] for m in replay] == ids[2:]
        assert joined["replayed"] == 4 and joined["recovered"] is True
        await expect_deltas(metered, before, {
            key("streamgate_replayed_messages_total"): 4,
            key("streamgate_replay_duration_seconds_count"): 1,
        })
        # A join with "$" replays nothing and adds no replay sample.
        mid = await scrape(metered)
        await late.join(f"{room}-live", since="$")
        await expect_deltas(metered, mid, {
            key("streamgate_replayed_messages_total"): 0,
            key("streamgate_replay_duration_seconds_count"): 0,
            key("websocket_messages_received_total", type="join"): 1,
        })
    finally:
        await close_all(metered, [c for c in (pub, late) if c is not None], base)


async def test_every_frame_a_client_receives_is_counted_as_sent_by_type(
    metered: Instance, uid: Callable[[str], str], room: str
) -> None:
    before = await scrape(metered)
    base = before.value("websocket_connections")
    pub = await connect(metered, uid("pub"))
    clients = [pub]
    try:
        await pub.join(room, since="$")
        ids = [f["id"] for f in await pub.publish_many(room, [{"n": n} for n in range(4)])]
        late = await connect(metered, uid("late"))
        clients.append(late)
        await late.join(room, since=ids[0])  # 3 replayed
        more = [f["id"] for f in await pub.publish_many(room, [{"n": n} for n in range(4, 6)])]
        for c in clients:
            await c.wait_for_id(room, more[-1])
        await pub.ping()
        seen = frame_types(clients)
        assert seen["message"] == 6 + 5 and seen["joined"] == 2
        await expect_deltas(metered, before, {
            key("websocket_messages_sent_total", type=kind): count for kind, count in seen.items()
        }, timeout=1)
    finally:
        await close_all(metered, clients, base)


async def test_pubsub_reconnect_and_gap_fill_are_counted(
    metered: Instance, metrics_redis_client: Any, uid: Callable[[str], str], room: str
) -> None:
    base = (await scrape(metered)).value("websocket_connections")
    sub, pub = await connect(metered, uid("sub")), await connect(metered, uid("pub"))
    try:
        await sub.join(room, since="$")
        before = await scrape(metered)
        # Kill the Pub/Sub connection and publish at once: the messages sent
        # while the listener is being rebuilt are read back from the stream.
        # Retried a bounded number of times in case the rebuild wins the race.
        for _attempt in range(5):
            mark = await scrape(metered)
            killed = await metrics_redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            assert int(killed) >= 1
            await pub.publish_many(room, [{"n": n} for n in range(20)], window=20)
            await wait_metric(
                metered,
                lambda s, m=mark: s.value("streamgate_pubsub_reconnects_total") > m.value("streamgate_pubsub_reconnects_total"),
                5, "a Pub/Sub reconnect counted",
            )
            expected = await history_ids(metered, room, user=None, token=make_token("observer"))
            await sub.wait_for_id(room, expected[-1])
            now = await scrape(metered)
            if now.value("streamgate_gap_filled_messages_total") > mark.value("streamgate_gap_filled_messages_total"):
                break
        else:
            pytest.fail("no kill ever left a gap to fill in five attempts")
        assert_ids_equal(sub.ids[room], expected, "subscriber across Pub/Sub kills")
        after = await scrape(metered)
        assert after.value("streamgate_pubsub_reconnects_total") >= before.value("streamgate_pubsub_reconnects_total") + 1
        async with metered.http() as http:
            await async_wait_until(lambda: _ready(http), 5, message="readyz 200 after the reconnect")
    finally:
        await close_all(metered, [sub, pub], base)


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_refused_connections_are_counted_by_reason(metered: Instance, uid: Callable[[str], str]) -> None:
    before = await scrape(metered)
    base = before.value("websocket_connections")

    wrong_key = await try_connect(metered.ws_url(token=make_token(uid("x"), secret="not-the-secret-" + "x" * 32)))
    expired = await try_connect(metered.ws_url(token=make_token(uid("y"), ttl=-60)))
    assert wrong_key.refused and expired.refused, (wrong_key, expired)
    bad_origin = await try_connect(metered.ws_url(token=make_token(uid("z"))), origin="https://evil.example")
    assert bad_origin.refused and bad_origin.status in (403, 4403), bad_origin

    # Fill the instance up to MAX_CONNECTIONS; the next one is refused with 1013.
    clients = [await connect(metered, uid(f"f{n}")) for n in range(MAX_CONNECTIONS - int(base))]
    try:
        full = await try_connect(metered.ws_url(token=make_token(uid("one-more"))))
        assert (full.kind, full.status) == ("close", 1013), full
    finally:
        await close_all(metered, clients, base)
    after = await expect_deltas(metered, before, {
        key("streamgate_refused_connections_total", reason="unauthorized"): 2,
        key("streamgate_refused_connections_total", reason="origin"): 1,
        key("streamgate_refused_connections_total", reason="full"): 1,
    })
    # Refused connections are not open connections.
    assert after.value("websocket_connections") == base


async def test_rate_limited_frames_are_counted(metered: Instance, uid: Callable[[str], str], room: str) -> None:
    before = await scrape(metered)
    base = before.value("websocket_connections")
    pub = await connect(metered, uid("fast"))
    try:
        total = PUBLISH_BURST + 10
        for n in range(total):
            await pub.send({"type": "publish", "room": room, "body": n, "client_id": new_client_id()})
        answers: Counter[str] = Counter()
        while sum(answers.values()) < total:
            frame = await pub.recv_frame()
            if frame["type"] == "published":
                answers["published"] += 1
            elif frame["type"] == "error":
                assert frame["code"] == "rate_limited", frame
                answers["rate_limited"] += 1
        assert answers["rate_limited"] >= 1, answers
        await expect_deltas(metered, before, {
            key("streamgate_rate_limited_total"): answers["rate_limited"],
            key("websocket_messages_sent_total", type="published"): answers["published"],
            key("websocket_messages_received_total", type="publish"): total,
        })
    finally:
        await close_all(metered, [pub], base)


@pytest.fixture(scope="module")
def queued(metrics_factory: InstanceFactory) -> Instance:
    """A small outbound queue and a one-second stall limit."""
    return metrics_factory.start("Q", OUTBOUND_QUEUE="8", SLOW_CONSUMER_TIMEOUT="1", DRAIN_GRACE="0")


async def test_queue_depth_and_slow_consumer_close_are_counted(
    queued: Instance, uid: Callable[[str], str], room: str
) -> None:
    before = await scrape(queued)
    base = before.value("websocket_connections")
    stalled = await open_client(queued, uid("stalled"), rcvbuf=4096, max_queue=1)
    pub = await open_client(queued, uid("pub"))
    depths: list[float] = []
    catching_up: list[float] = []
    try:
        await stalled.join(room, since="$")
        await stalled.pause()
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                snap = await scrape(queued)
                depths.append(snap.value("streamgate_outbound_queue_depth"))
                catching_up.append(snap.value("streamgate_catching_up_sockets"))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            # About 6 MB for a socket that reads nothing: more than the kernel buffers.
            await pub.publish_many(room, [{"n": n, "pad": "x" * 30000} for n in range(200)], timeout=60)
            await wait_metric(
                queued,
                lambda s: s.value("streamgate_slow_consumer_closes_total")
                == before.value("streamgate_slow_consumer_closes_total") + 1,
                10, "the stalled socket closed as a slow consumer",
            )
        finally:
            stop.set()
            await watcher
        assert max(depths) > 0, "the outbound queue depth never showed the backlog"
        # The full queue sent the socket to catch-up from the stream.
        assert max(catching_up) == 1, catching_up
        stalled.resume()
        assert await stalled.wait_closed(timeout=15) in (4408, 1006)
    finally:
        await close_all(queued, [stalled, pub], base)
    after = await scrape(queued)
    assert after.value("streamgate_outbound_queue_depth") == 0
    assert after.value("streamgate_catching_up_sockets") == 0


async def test_error_frames_and_unrecovered_joins_are_counted(
    metered: Instance, uid: Callable[[str], str], room: str
) -> None:
    before = await scrape(metered)
    base = before.value("websocket_connections")
    client = await connect(metered, uid("err"))
    try:
        await client.send_text("{not json")
        await client.send({"type": "shout"})
        await client.send({"type": "join", "room": "bad room"})
        codes = [(await client.expect("error"))["code"] for _ in range(3)]
        assert codes == ["bad_frame", "unknown_type", "invalid_room"]
        # A room with no stream yet: whatever the client saw is gone.
        _, joined = await client.join(room, since="5-0")
        assert joined["recovered"] is False
        _, joined = await client.join(room + "-b", since="$")
        assert joined["recovered"] is True
    finally:
        await close_all(metered, [client], base)
    await expect_deltas(metered, before, {
        key("streamgate_error_frames_total", code="bad_frame"): 1,
        key("streamgate_error_frames_total", code="unknown_type"): 1,
        key("streamgate_error_frames_total", code="invalid_room"): 1,
        key("streamgate_unrecovered_joins_total"): 1,
    })


async def test_http_responses_are_counted_by_route_template_and_status(
    metered: Instance, uid: Callable[[str], str], room: str
) -> None:
    token = make_token(uid("reader"))
    before = await scrape(metered)
    async with metered.http() as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get(f"/rooms/{room}/messages")).status_code == 401
        for n in range(2):
            r = await http.get(f"/rooms/{room}-{n}/messages",
                               headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        assert (await http.get(f"/no/such/{room}")).status_code == 404
    after = await expect_deltas(metered, before, {
        key("streamgate_http_responses_total", route="/healthz", method="GET", status="200"): 1,
        key("streamgate_http_responses_total", route="/rooms/{room}/messages", method="GET",
            status="401"): 1,
        key("streamgate_http_responses_total", route="/rooms/{room}/messages", method="GET",
            status="200"): 2,
        key("streamgate_http_responses_total", route="unmatched", method="GET", status="404"): 1,
    })
    # The requested paths never become labels.
    assert room not in after.text


async def test_process_and_build_info_are_exposed(metered: Instance) -> None:
    snap = await scrape(metered)
    assert snap.value("process_resident_memory_bytes") > 1_000_000
    assert snap.value("process_open_fds") >= 3
    assert snap.value("streamgate_ready") == 1 and snap.value("streamgate_draining") == 0
    (labels,) = [lab for name, lab, v in snap.samples if name == "streamgate_build_info" and v == 1]
    assert labels["version"] == metadata.version("streamgate")
    assert labels["git_sha"] == "unknown" or len(labels["git_sha"]) == 12, labels


async def test_build_sha_setting_names_the_commit_where_git_cannot(
    make_instance: Callable[..., Instance]
) -> None:
    inst = make_instance("BS", BUILD_SHA="0123456789ab")
    snap = await scrape(inst)
    (labels,) = [lab for name, lab, v in snap.samples if name == "streamgate_build_info" and v == 1]
    assert labels["git_sha"] == "0123456789ab"


@needs_promtool
async def test_live_metrics_pass_promtool_with_bounded_labels(metered: Instance, uid: Callable[[str], str], room: str) -> None:
    base = (await scrape(metered)).value("websocket_connections")
    user = uid("lint")
    client = await connect(metered, user)
    try:
        await client.join(room, since="$")
        await client.publish(room, {"hello": "metrics"}, client_id=new_client_id())
        await client.ping()
        refused = await try_connect(metered.ws_url(token="not-a-token"))
        assert refused.refused
        snap = await scrape(metered)
    finally:
        await close_all(metered, [client], base)

    promtool_check_metrics(snap.text)
    for name, kind in {**EXPECTED_METRICS, **PROCESS_METRICS}.items():
        assert snap.types.get(name) == kind, f"{name}: declared {snap.types.get(name)!r}, expected {kind}"
    assert snap.samples, "no samples at all"
    for name, labels, _ in snap.samples:
        if name.startswith(PROCESS_PREFIXES):
            assert "instance" not in labels, f"{name}{labels}"
            continue
        assert labels.get("instance") == metered.instance_id, f"{name}{labels}: no instance label"
        assert set(labels) <= ALLOWED_LABELS, f"{name}{labels}: unbounded label"
        assert user not in labels.values() and room not in labels.values(), f"{name}{labels}: per-user/room label"
    for name in EXPECTED_METRICS:
        if name not in ("websocket_messages_received_total", "streamgate_refused_connections_total"):
            continue
        assert any(n == name for n, _, _ in snap.samples), f"{name}: no sample after traffic"
