"""GET /healthz: 200 when every configured dependency answers, 503 naming the one that does not."""

from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception:  # noqa: BLE001 - any failure means "down"
        logger.warning("healthz: database check failed", exc_info=True)
        return "error"


def _redis() -> str:
    from chatsite import env
    from perf.redis import ping

    if not env.REDIS_URL:
        return "disabled"
    try:
        return "ok" if ping() else "error"
    except Exception:  # noqa: BLE001
        logger.warning("healthz: redis check failed", exc_info=True)
        return "error"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    parts = {"database": _database(), "redis": _redis()}
    healthy = all(v in ("ok", "disabled") for v in parts.values())
    body = {"status": "ok" if healthy else "error", **parts}
    return JsonResponse(body, status=200 if healthy else 503)
