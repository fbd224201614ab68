"""Liveness (the process answers) and readiness (it can reach what it needs)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from app.core.lifecycle import failing_tasks
from app.services import get_services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    return {"status": "ok"}


@bp.get("/ready")
def ready():
    """200 when this worker should get traffic; 503 while draining or without its queue."""
    services = get_services()
    checks = {"message_queue": services.manager.check() or "ok",
              "accepting": "shutting down" if services.lifecycle.draining else "ok",
              "background_tasks": failing_tasks() or "ok"}
    problems = [f"{name}: {value}" for name, value in checks.items() if value != "ok"]
    if not problems:
        return {"status": "ready", "checks": checks}
    response = jsonify(status="unavailable", checks=checks,
                       error={"code": "not_ready", "message": "; ".join(problems)})
    response.status_code = 503
    return response
