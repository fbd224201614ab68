"""Liveness (the process answers) and readiness (it can reach what it needs)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from app.services import get_services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    return {"status": "ok"}


@bp.get("/ready")
def ready():
    problem = get_services().manager.check()
    if problem is None:
        return {"status": "ready", "checks": {"message_queue": "ok"}}
    response = jsonify(status="unavailable", checks={"message_queue": problem},
                       error={"code": "not_ready", "message": problem})
    response.status_code = 503
    return response
