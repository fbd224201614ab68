"""The one error type the API and the namespaces turn into a client-facing reply."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An expected failure with a stable machine-readable code.

    REST answers it with `status` and `{"error": {...}}`; a Socket.IO event answers
    it with the ack `{"ok": false, "error": {...}}`.
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return error


class ValidationError(AppError):
    status = 400
    code = "invalid_payload"


class AuthError(AppError):
    status = 401
    code = "invalid_token"


class ForbiddenError(AppError):
    status = 403
    code = "forbidden"


class QueueUnavailable(AppError):
    """The message queue refused a publish after every retry: nobody got the message."""

    status = 503
    code = "queue_unavailable"


class DeliveryIncomplete(QueueUnavailable):
    """The publish went out but may not have reached every worker (some members may
    have the message, others not): a retry with the same `client_id` completes it
    without a duplicate."""

    code = "delivery_incomplete"
