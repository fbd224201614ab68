"""GET /metrics in one process (the default registry): format, labels, the switch.

The sums over several workers are tested against real servers in tests/stack/test_metrics.py.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.core import metrics
from tests.helpers import metric, metric_samples

FAMILIES = {"realtime_connections", "realtime_events", "realtime_event_duration_seconds",
            "realtime_auth_refusals", "realtime_deliveries",
            "realtime_slow_consumer_disconnects", "realtime_queue_publishes",
            "realtime_queue_publish_errors"}


def scrape(http) -> dict[tuple[str, tuple], float]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return metric_samples(response.get_data(as_text=True))


def test_metrics_is_prometheus_text_with_every_family(http):
    response = http.get("/metrics")
    families = {family.name: family for family in
                text_string_to_metric_families(response.get_data(as_text=True))}
    assert set(families) >= FAMILIES
    assert families["realtime_connections"].type == "gauge"
    assert families["realtime_events"].type == "counter"
    assert families["realtime_event_duration_seconds"].type == "histogram"
    # every namespace's connections and every declared event's histogram exist at 0
    namespaces = {s.labels["namespace"] for s in families["realtime_connections"].samples}
    assert {"/chat", "/admin"} <= namespaces
    events = {(s.labels["namespace"], s.labels["event"])
              for s in families["realtime_event_duration_seconds"].samples}
    assert {("/chat", "join"), ("/chat", "message"), ("/admin", "stats"),
            ("/chat", "unknown")} <= events


def test_openmetrics_when_the_scraper_asks(http):
    response = http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_counts_are_labelled_with_bounded_names(http, app):
    chat = app.extensions["realtime"].sio.namespace_handlers["/chat"].metrics
    before = scrape(http)
    chat.event("join", "ok", 0.002)
    chat.event("x" * 500, "unknown_event", 0.001)  # a client-chosen name: one fixed label
    chat.event(["not", "a", "name"], "unknown_event", 0.001)
    chat.refused("invalid_token")
    metrics.deliveries.pending += 3  # flushed by the scrape
    after = scrape(http)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("realtime_events_total", namespace="/chat", event="join", outcome="ok") == 1
    assert delta("realtime_events_total", namespace="/chat", event="unknown",
                 outcome="unknown_event") == 2
    assert not any("x" * 500 in str(labels) for _, labels in after)
    assert delta("realtime_event_duration_seconds_count", namespace="/chat", event="join") == 1
    assert delta("realtime_auth_refusals_total", namespace="/chat", code="invalid_token") == 1
    assert delta("realtime_deliveries_total") == 3


def test_metrics_can_be_switched_off(settings):
    http = create_app(settings, metrics_enabled=False).test_client()
    assert http.get("/metrics").status_code == 404
