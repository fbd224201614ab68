"""GET /metrics: Prometheus text format, summed over every worker of this server.

Not under /api and not for the public: the proxy should refuse it from outside
(docs/deployment.md, "Metrics"). Registered only when METRICS_ENABLED.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.core import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    metrics.flush()
    body, content_type = metrics.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
