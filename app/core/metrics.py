"""Prometheus metrics (prometheus_client), served at GET /metrics (app/api/metrics.py).

Several gunicorn workers: prometheus_client's multiprocess mode. config/gunicorn.conf.py
gives each server start a fresh directory in PROMETHEUS_MULTIPROC_DIR (before any
worker imports this module: prometheus_client picks its value store at import), every
worker writes its values to files there, and a scrape answered by any worker sums all
of them. A dead worker's counters stay in the sums; its live gauge (connections) is
removed by the master (`mark_process_dead`, gunicorn's child_exit hook).

Without that variable (flask run, in-process tests) the metrics live in this process
and the default registry serves them. Metrics are per process either way: two apps
created in one process share them.

Labels are bounded: namespaces and event names are the declared ones (an unknown event
is counted as "unknown"), outcomes are "ok" or an error code.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN_EVENT = "unknown"
OK = "ok"

CONNECTIONS = Gauge(
    "realtime_connections", "Socket.IO connections open, per namespace (all workers)",
    ["namespace"], multiprocess_mode="livesum")
EVENTS = Counter(
    "realtime_events_total", "Client events handled, by namespace, event and outcome "
    '("ok" or the error code of the ack)', ["namespace", "event", "outcome"])
EVENT_LATENCY = Histogram(
    "realtime_event_duration_seconds", "Time from receiving a client event to its ack",
    ["namespace", "event"],
    buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0))
AUTH_REFUSALS = Counter(
    "realtime_auth_refusals_total", "Namespace connects refused, by namespace and error code",
    ["namespace", "code"])
DELIVERIES = Counter(
    "realtime_deliveries_total", "Socket.IO events handed to this server's clients, one per "
    "recipient (acks and Engine.IO pings excluded)")
SLOW_CONSUMER_DISCONNECTS = Counter(
    "realtime_slow_consumer_disconnects_total",
    "Clients disconnected for not reading (MAX_QUEUED_PACKETS exceeded)")
UNCONNECTED_EVENTS = Counter(
    "realtime_unconnected_events_total", "Client events for a namespace the connection has "
    "not connected to: dropped, and logged once per connection")
QUEUE_PUBLISHES = Counter(
    "realtime_queue_publishes_total", "Publishes to the message queue, by outcome: ok, "
    "failed (every attempt failed), partial (fewer workers subscribed than before an outage)",
    ["outcome"])
QUEUE_RECEIVED = Counter(
    "realtime_queue_received_total", "Messages this server read from the message queue (the "
    "shared channel, and the channels of the rooms it holds members of)")
QUEUE_PUBLISH_ERRORS = Counter(
    "realtime_queue_publish_errors_total", "Failed publish attempts (each retry counts)")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def render(accept: str | None = None) -> tuple[bytes, str]:
    """Every metric in the format the scraper accepts (Prometheus text by default,
    OpenMetrics when asked), and its content type."""
    deliveries.flush()
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # reads every worker's files, the dead ones' too
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class NamespaceMetrics:
    """One namespace's metric children, bound once: `.labels()` takes a lock and
    builds a key on every call, too much for the event path."""

    def __init__(self, namespace: str, events: Any) -> None:
        self.namespace = namespace
        self.connections = CONNECTIONS.labels(namespace)
        self.known = frozenset(events)
        self.latency = {name: EVENT_LATENCY.labels(namespace, name)
                        for name in (*self.known, UNKNOWN_EVENT)}
        self.outcomes: dict[tuple[str, str], Any] = {}

    def event_label(self, event: Any) -> str:
        return event if isinstance(event, str) and event in self.known else UNKNOWN_EVENT

    def event(self, event: Any, outcome: str, seconds: float) -> None:
        name = self.event_label(event)
        key = (name, outcome)
        counter = self.outcomes.get(key)
        if counter is None:  # outcomes are "ok" and the error codes: a bounded set
            counter = self.outcomes[key] = EVENTS.labels(self.namespace, name, outcome)
        counter.inc()
        self.latency[name].observe(seconds)

    def refused(self, code: str) -> None:
        AUTH_REFUSALS.labels(self.namespace, code).inc()


class BatchedCounter:
    """Counted as a plain integer, added to the Prometheus counter in batches: in
    multiprocess mode an increment is a locked file-backed write (~1 µs here), about
    a fifth of what a whole delivery costs in a fanout."""

    __slots__ = ("counter", "pending")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.pending = 0

    def flush(self) -> None:
        count, self.pending = self.pending, 0
        if count:
            self.counter.inc(count)


deliveries = BatchedCounter(DELIVERIES)  # one per recipient
queue_received = BatchedCounter(QUEUE_RECEIVED)


def flush() -> None:
    """This worker's batched counts into the Prometheus counters."""
    deliveries.flush()
    queue_received.flush()


def flush_periodically(sleep, interval: float = 1.0) -> None:
    """Background task of each worker: a scrape sees its counts within `interval` (the
    answering worker's at once)."""
    while True:
        sleep(interval)
        flush()


# --- message queue (app/core/queue calls these) ----------------------------------
_PUBLISH_OUTCOMES = {outcome: QUEUE_PUBLISHES.labels(outcome)
                     for outcome in ("ok", "failed", "partial")}


def queue_published(outcome: str = OK) -> None:
    """One publish ended: "ok", "failed" (QueueUnavailable after every attempt) or
    "partial" (heard by fewer workers than before an outage)."""
    _PUBLISH_OUTCOMES[outcome].inc()


def queue_publish_error() -> None:
    """One publish attempt raised (it may be retried)."""
    QUEUE_PUBLISH_ERRORS.inc()
