"""Errors a user can cause. Every surface maps them the same way:

HTTP API  -> status + ``{"detail": message, "code": code}``
WebSocket -> ``{"type": "error", "code": code, "message": message}``
Pages     -> the form error or a 404/403 page
"""

from __future__ import annotations


class ChatError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class InvalidInput(ChatError):
    status = 400
    code = "invalid"


class NotAuthenticated(ChatError):
    status = 401
    code = "not_authenticated"


class NotFound(ChatError):
    """Also used for "exists but you may not see it": never hint that it exists."""

    status = 404
    code = "not_found"


class Forbidden(ChatError):
    """For objects the user can already see but may not change."""

    status = 403
    code = "forbidden"


class Conflict(ChatError):
    status = 409
    code = "conflict"


class Unavailable(ChatError):
    """A dependency is down; the client may retry."""

    status = 503
    code = "unavailable"
