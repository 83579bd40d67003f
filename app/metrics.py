"""Every Prometheus metric of an instance, in one place.

Labels are bounded: ``instance`` and frame type, reason, error code, HTTP
route template, method and status, never a user or a room, so the series
count does not grow with traffic. Bucket bounds are in seconds but chosen
around milliseconds, where this service lives.

The registry also carries the process (CPU, resident memory, open file
descriptors) and platform collectors, so one scrape of ``/metrics`` says how
the process itself is doing, and ``streamgate_build_info`` names the build.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from .buildinfo import BuildInfo, build_info

MS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """Implements :class:`streams.observer.Observer` too."""

    def __init__(self, instance: str, build: BuildInfo | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        i = ["instance"]
        self._instance = instance
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        build = build or build_info()
        Gauge("streamgate_build_info", "The running build: always 1, the build in its labels",
              ["instance", "version", "git_sha"], registry=r
              ).labels(instance, build.version, build.git_sha).set(1)
        self.connections = Gauge(
            "websocket_connections", "Open WebSocket connections", i, registry=r
        ).labels(instance)
        # Frame counts are plain integers bumped on the hot path and turned
        # into counters only when scraped (see _FrameCounts).
        self.frames_sent: collections.Counter[str] = collections.Counter()
        self.frames_received: collections.Counter[str] = collections.Counter()
        r.register(_FrameCounts(instance, self.frames_sent, self.frames_received))
        # Error frames by code and HTTP answers by route: the same scheme.
        self.errors_sent: collections.Counter[str] = collections.Counter()
        self.http_answers: collections.Counter[tuple[str, str, str]] = collections.Counter()
        r.register(_ErrorAndHTTPCounts(instance, self.errors_sent, self.http_answers))
        self._unrecovered = Counter(
            "streamgate_unrecovered_joins_total", "Joins answered `recovered: false`: the client "
            "missed messages that are gone for good", i, registry=r).labels(instance)
        self.catching_up = Gauge(
            "streamgate_catching_up_sockets", "Sockets reading a room from its stream (replay or "
            "catch-up) instead of live", i, registry=r).labels(instance)
        self.connection_duration = Histogram(
            "websocket_connection_duration_seconds", "How long connections stay open",
            i, buckets=DURATION_BUCKETS, registry=r).labels(instance)
        self.publish_latency = Histogram(
            "streamgate_publish_latency_seconds", "Publish request to storage confirmation",
            i, buckets=MS_BUCKETS, registry=r).labels(instance)
        self.delivery_latency = Histogram(
            "streamgate_delivery_latency_seconds", "Append to hand-over to the socket queue",
            i, buckets=MS_BUCKETS, registry=r).labels(instance)
        self.replayed = Counter(
            "streamgate_replayed_messages_total", "Messages replayed from streams on join",
            i, registry=r).labels(instance)
        self.replay_duration = Histogram(
            "streamgate_replay_duration_seconds", "Time from join to joined",
            i, buckets=MS_BUCKETS, registry=r).labels(instance)
        self._gaps = Counter(
            "streamgate_gap_filled_messages_total", "Entries missed on Pub/Sub, read back from streams",
            i, registry=r).labels(instance)
        self._reconnects = Counter(
            "streamgate_pubsub_reconnects_total", "Pub/Sub connections lost and rebuilt",
            i, registry=r).labels(instance)
        self._failovers = Counter(
            "streamgate_redis_failovers_total", "Changes of Redis master address seen",
            i, registry=r).labels(instance)
        self._retries = Counter(
            "streamgate_redis_retries_total", "Redis calls retried after a transient failure",
            i, registry=r).labels(instance)
        self._unavailable = Counter(
            "streamgate_unavailable_total", "Publishes answered `unavailable`",
            i, registry=r).labels(instance)
        self._canary_missed = Counter(
            "streamgate_pubsub_canary_missed_total", "Pub/Sub self-checks that did not come back",
            i, registry=r).labels(instance)
        self.slow_closes = Counter(
            "streamgate_slow_consumer_closes_total", "Connections closed with 4408",
            i, registry=r).labels(instance)
        self.refused = Counter(
            "streamgate_refused_connections_total", "Connections refused, by reason",
            ["instance", "reason"], registry=r)
        self.rate_limited = Counter(
            "streamgate_rate_limited_total", "Frames refused by the rate limit",
            i, registry=r).labels(instance)
        self.local_rooms = Gauge(
            "streamgate_local_rooms", "Rooms with members on this instance", i, registry=r
        ).labels(instance)
        self.ready = Gauge(
            "streamgate_ready", "1 while /readyz answers 200: Redis answers, Pub/Sub is healthy "
            "(in cluster mode: on at least one master) and not draining",
            i, registry=r).labels(instance)
        self.draining = Gauge(
            "streamgate_draining", "1 while the instance drains before exiting",
            i, registry=r).labels(instance)
        self.shards_unhealthy = Gauge(
            "streamgate_shards_unhealthy",
            "Redis Cluster masters whose Pub/Sub link is unhealthy (0 outside cluster mode)",
            i, registry=r).labels(instance)
        self.queue_depth = Gauge(
            "streamgate_outbound_queue_depth", "Frames waiting in outbound queues, summed",
            i, registry=r).labels(instance)
        self.tasks = Gauge(
            "streamgate_tasks", "asyncio tasks alive in the instance (an idle socket needs "
            "only the server's own)", i, registry=r).labels(instance)

    def watch(self, queued: Callable[[], float], rooms: Callable[[], float],
              ready: Callable[[], float], draining: Callable[[], float],
              tasks: Callable[[], float] = lambda: 0.0,
              catching_up: Callable[[], float] = lambda: 0.0,
              shards_unhealthy: Callable[[], float] = lambda: 0.0) -> None:
        """Gauges read at scrape time instead of being kept up to date."""
        self.shards_unhealthy.set_function(shards_unhealthy)
        self.catching_up.set_function(catching_up)
        self.queue_depth.set_function(queued)
        self.local_rooms.set_function(rooms)
        self.ready.set_function(ready)
        self.draining.set_function(draining)
        self.tasks.set_function(tasks)

    def handed_over(self, append_ms: int) -> None:
        """One fan-out: one latency sample, however many sockets it reached."""
        self.delivery_latency.observe(max(0.0, time.time() - append_ms / 1000))

    def replay_done(self, messages: int, seconds: float) -> None:
        self.replayed.inc(messages)
        self.replay_duration.observe(seconds)

    def sent(self, kind: str) -> None:
        self.frames_sent[kind] += 1

    def received(self, kind: str) -> None:
        self.frames_received[kind] += 1

    def error_sent(self, code: str) -> None:
        """An ``error`` frame went out; ``code`` is one of the protocol's
        few error codes, so the label stays bounded."""
        self.errors_sent[code] += 1

    def http_answered(self, route: str, method: str, status: int) -> None:
        """``route`` is the route's template (``/rooms/{room}/messages``),
        never the requested path, so the label stays bounded."""
        self.http_answers[(route, method, str(status))] += 1

    def unrecovered_join(self) -> None:
        self._unrecovered.inc()

    def refuse(self, reason: str) -> None:
        self.refused.labels(self._instance, reason).inc()

    def published(self, seconds: float) -> None:
        self.publish_latency.observe(seconds)

    def unavailable(self) -> None:
        self._unavailable.inc()

    # Observer
    def retry(self) -> None:
        self._retries.inc()

    def pubsub_reconnect(self) -> None:
        self._reconnects.inc()

    def gap_filled(self, entries: int) -> None:
        self._gaps.inc(entries)

    def failover(self) -> None:
        self._failovers.inc()

    def canary_missed(self) -> None:
        self._canary_missed.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _FrameCounts(Collector):
    """``websocket_messages_{sent,received}_total`` by frame type, read from
    plain integer tallies at scrape time."""

    def __init__(self, instance: str, sent: collections.Counter[str],
                 received: collections.Counter[str]) -> None:
        self._instance = instance
        self._sent = sent
        self._received = received

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, doc, tally in (
            ("websocket_messages_sent", "Frames sent to clients, by type", self._sent),
            ("websocket_messages_received", "Frames received from clients, by type", self._received),
        ):
            family = CounterMetricFamily(name, doc, labels=["instance", "type"])
            for kind, value in sorted(tally.items()):
                family.add_metric([self._instance, kind], value)
            yield family


class _ErrorAndHTTPCounts(Collector):
    """``streamgate_error_frames_total`` by code and
    ``streamgate_http_responses_total`` by route, method and status, read
    from plain integer tallies at scrape time."""

    def __init__(self, instance: str, errors: collections.Counter[str],
                 http: collections.Counter[tuple[str, str, str]]) -> None:
        self._instance = instance
        self._errors = errors
        self._http = http

    def collect(self) -> Iterator[CounterMetricFamily]:
        errors = CounterMetricFamily("streamgate_error_frames", "Error frames sent to clients, by code",
                                     labels=["instance", "code"])
        for code, value in sorted(self._errors.items()):
            errors.add_metric([self._instance, code], value)
        yield errors
        http = CounterMetricFamily("streamgate_http_responses", "HTTP responses, by route template, "
                                   "method and status", labels=["instance", "route", "method", "status"])
        for (route, method, status), value in sorted(self._http.items()):
            http.add_metric([self._instance, route, method, status], value)
        yield http
