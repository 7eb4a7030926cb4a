"""Errors a user can cause. Every surface maps them the same way:

HTTP API  -> status + ``{"detail": message, "code": code}``
WebSocket -> ``{"type": "error", "code": code, "message": message}``
Pages     -> the form error or a 404/403 page
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError


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


class Gone(ChatError):
    """For something that existed and has ended for good (a revoked, expired or used-up invite link)."""

    status = 410
    code = "gone"


# Errors that mean "the database is busy or unreachable", not "the request is
# wrong": a pool timeout (psycopg_pool's arrives as OperationalError), a server
# that is down or dropped the connection. Every surface answers them as
# "unavailable, retry" (HTTP 503, WebSocket error frame), never as a 500.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
UNAVAILABLE_DETAIL = "The database is busy or unavailable; retry."
