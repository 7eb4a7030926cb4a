"""The history pages every reader shares, answered from the cache in front of Django's handler.

A room's newest page, and the older pages behind it, are cached rendered
and brotli-compressed (chat.selectors.room_history_page). Once they are,
what is left of a request is Django's: building the request, a dozen
middlewares, URL resolution, django-ninja, a thread hop, three cache round
trips. About 2 ms of CPU, where the answer itself costs two Redis round trips
(docs/PERFORMANCE.md, "A fast lane for shared history pages").

:class:`HistoryFastLane` wraps the HTTP application. It answers a request
itself only when the answer is certain to be the one Django would give:

- ``GET /api/v1/rooms/<id>/messages`` with at most ``cursor`` (a backward
  cursor) and ``limit`` in the query, no body, one ``Authorization: Bearer``
  header, an allowed host, and an ``Accept-Encoding`` for which Django would
  send the stored brotli bytes as they are;
- the token's user, the room, the user's access to it and the page are all
  in the cache, and every stamp the page was rendered under still holds.
  The same entries, read the same way, as the Django path reads them: the
  same writers invalidate them. The page goes out as stored: brotli, or,
  for a page under ``COMPRESSION_MIN_LENGTH`` (a room's first messages),
  plain, as Django sends it.

Anything else goes to Django unchanged (a miss, an unusual request, a Redis
error), which answers it, fills the cache, and counts its own lookups; the
fast lane counts nothing for a request it passes on.

Its response is Django's, byte for byte but for the request id and the
BREACH padding: the headers come from running the project's header-setting
middlewares (security, CSP, clickjacking) once on a probe response; the
request is counted where Django's would be (django-prometheus, the request
log, active users, the cache families). It is off (everything goes to
Django) when ``HTTP_FAST_LANE`` is false, under DEBUG, while silk records
requests, without a django-redis cache, and when MIDDLEWARE holds a
middleware it does not know: a new middleware is never silently skipped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from secrets import randbelow, token_urlsafe
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.urls import NoReverseMatch, resolve, reverse
from django.utils.module_loading import import_string

from chat import selectors
from chat.api import JSON_CONTENT_TYPE
from chat.api_schemas import page_cursor_decode
from chat.metrics import HTTP_FAST_LANE
from chat.models import ApiToken
from chatsite.errors import ChatError
from perf import aredis
from perf import cache as perf_cache
from perf import context
from perf import metrics as perf_metrics
from perf.compression import CompressionMiddleware, preferred_coding, sent_as_stored, stored_brotli_response

logger = logging.getLogger(__name__)

# Middlewares whose effect on this response the fast lane reproduces, or which
# have none on it (a GET with a bearer token touches no session, sets no
# cookie, needs no CSRF check, and its response already carries
# Content-Length).
STATIC_MIDDLEWARE = "perf.static.StaticFilesMiddleware"
ACCOUNTED_MIDDLEWARE = frozenset(
    {
        "perf.metrics.PrometheusBeforeMiddleware",  # perf.metrics.http_response_counted
        "perf.metrics.PrometheusAfterMiddleware",
        "perf.middleware.PerfMiddleware",  # X-Request-ID (Server-Timing only under DEBUG or for a session's staff user)
        "perf.metrics.RequestLogMiddleware",  # perf.metrics.request_served
        "perf.cache.RequestMemoMiddleware",
        "perf.compression.CompressionMiddleware",  # the X-Noise padding
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",  # DISALLOWED_USER_AGENTS and PREPEND_WWW turn the lane off
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        # Serves only paths that are static files (under STATIC_URL, or WHITENOISE_ROOT's
        # files at the root) and passes everything else on untouched: _make_plan
        # checks that the history path cannot be one.
        STATIC_MIDDLEWARE,
    }
)
# Middlewares that only add response headers: run once on a probe response.
HEADER_MIDDLEWARE = frozenset(
    {
        "django.middleware.security.SecurityMiddleware",
        "csp.middleware.CSPMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
)
PROMETHEUS_MIDDLEWARE = "perf.metrics.PrometheusAfterMiddleware"

# The families a served page was found in, one lookup each (as on Django's path).
SERVED_FAMILIES = ("tokens", "rooms", "access", "pages")
LIMIT_RE = re.compile(r"[1-9][0-9]{0,5}")
ROOM_ID_RE = re.compile(r"[1-9][0-9]{0,17}")
BEARER_PREFIX = b"Bearer "
SAMPLE_ROOM_ID = 987654321
MEMO_SIZE = 4096


@dataclass
class Plan:
    """What the current settings make of the lane (rebuilt when a setting changes)."""

    enabled: bool
    reason: str = ""
    path_prefix: str = ""
    path_suffix: str = ""
    view_name: str = ""
    prometheus: bool = False
    request_log: bool = False
    # By (secure, brotli): a page stored brotli-compressed, or one too small to compress.
    headers: dict[tuple[bool, bool], list[tuple[bytes, bytes]] | None] = field(default_factory=dict)
    # django-redis's key function and serializer (pure functions of the cache's settings).
    make_key: Any = None
    decode: Any = None
    none_raw: bytes = b""
    # Decoded token entries by their stored bytes: the same bytes are the same
    # user, so a reader's entry is unpickled once, not once per request.
    users: dict[bytes, int] = field(default_factory=dict)
    # The user each token key held last time: a guess that lets one round trip
    # fetch the token entry and the entries keyed by its user, checked against
    # the token entry fetched in that same round trip.
    token_users: dict[str, int] = field(default_factory=dict)
    hosts: dict[bytes, bool] = field(default_factory=dict)
    # SECURE_PROXY_SSL_HEADER as an ASGI header name, and the value that means HTTPS.
    proxy_header: bytes = b""
    proxy_https: str = ""
    # (event loop, its async Redis client): aredis.client() asks the cache
    # backend every time, which costs more than the lookup.
    client: tuple[Any, Any] = (None, None)


_plan: Plan | None = None
_plan_lock = threading.Lock()


def plan() -> Plan:
    global _plan
    found = _plan
    if found is None:
        with _plan_lock:
            if _plan is None:
                _plan = _make_plan()
                if not _plan.enabled:
                    logger.info("history fast lane off: %s", _plan.reason)
            found = _plan
    return found


def _reset_plan(**kwargs: Any) -> None:
    global _plan
    _plan = None


setting_changed.connect(_reset_plan, dispatch_uid="chat.fastlane.reset_plan")


def _make_plan() -> Plan:
    if not getattr(settings, "HTTP_FAST_LANE", False):
        return Plan(False, "HTTP_FAST_LANE is off")
    if settings.DEBUG:
        return Plan(False, "DEBUG is on")
    if not settings.COMPRESSION_ENABLED:
        return Plan(False, "compression is off: pages are stored plain")
    if settings.DISALLOWED_USER_AGENTS or settings.PREPEND_WWW:
        return Plan(False, "CommonMiddleware may refuse or redirect")
    if settings.USE_X_FORWARDED_HOST:
        return Plan(False, "USE_X_FORWARDED_HOST: the host is the proxy's to give")
    codec = aredis.backend_client()
    if codec is None:
        return Plan(False, "the cache is not django-redis")
    unknown = [m for m in settings.MIDDLEWARE if m not in ACCOUNTED_MIDDLEWARE | HEADER_MIDDLEWARE]
    if unknown:
        return Plan(False, f"unknown middleware {', '.join(unknown)}")
    try:
        path = reverse("api:message_list", kwargs={"room_id": SAMPLE_ROOM_ID})
    except NoReverseMatch:
        return Plan(False, "the URLconf has no history endpoint")
    prefix, _, suffix = path.partition(str(SAMPLE_ROOM_ID))
    if STATIC_MIDDLEWARE in settings.MIDDLEWARE:
        if getattr(settings, "WHITENOISE_ROOT", None):
            return Plan(False, "WHITENOISE_ROOT: static files may answer any path")
        # The prefix whitenoise serves under, found as it finds it.
        static = getattr(settings, "WHITENOISE_STATIC_PREFIX", None) or urlsplit(settings.STATIC_URL or "").path
        static = "/" + static.strip("/") + "/" if static.strip("/") else ""
        if static and (prefix.startswith(static) or static.startswith(prefix)):
            return Plan(False, "the history endpoint and the static files share a path")
    proxy = settings.SECURE_PROXY_SSL_HEADER
    return Plan(
        True,
        path_prefix=prefix,
        path_suffix=suffix,
        view_name=resolve(path).view_name,
        prometheus=PROMETHEUS_MIDDLEWARE in settings.MIDDLEWARE,
        request_log="perf.metrics.RequestLogMiddleware" in settings.MIDDLEWARE,
        headers={(secure, brotli): _probe_headers(secure, brotli) for secure in (False, True) for brotli in (False, True)},
        make_key=codec.make_key,
        decode=codec.decode,
        none_raw=codec.encode(perf_cache.NONE, allow_int=False),
        proxy_header=proxy[0].lower().removeprefix("http_").replace("_", "-").encode("latin-1") if proxy else b"",
        proxy_https=proxy[1] if proxy else "",
    )


class _ProbeRequest(HttpRequest):
    def __init__(self, secure: bool) -> None:
        super().__init__()
        self.method = "GET"
        self.path = self.path_info = "/"
        self._secure = secure

    def _get_scheme(self) -> str:
        return "https" if self._secure else "http"

    def is_secure(self) -> bool:
        return self._secure


def _probe_headers(secure: bool, brotli: bool) -> list[tuple[bytes, bytes]] | None:
    """The headers Django's response to a served page carries, less the per-response ones.

    A brotli page goes out as stored (perf.compression.encoded_response:
    Content-Encoding and Vary); a page under COMPRESSION_MIN_LENGTH goes out
    plain, and CompressionMiddleware leaves it without either. None when the
    header middlewares would not let the response through as it is
    (SECURE_SSL_REDIRECT for a plain-HTTP request): such requests go to Django.
    """
    if brotli:
        response = stored_brotli_response(b"", content_type=JSON_CONTENT_TYPE)
    else:
        response = HttpResponse(b"", content_type=JSON_CONTENT_TYPE)
    handler: Any = lambda request: response  # noqa: E731
    for path in reversed([m for m in settings.MIDDLEWARE if m in HEADER_MIDDLEWARE]):
        handler = import_string(path)(handler)
    try:
        answered = handler(_ProbeRequest(secure))
    except Exception:  # noqa: BLE001 - e.g. SECURE_SSL_REDIRECT asking the probe for its host
        return None
    if answered is not response:
        return None
    return [
        (name.encode("ascii"), value.encode("latin-1"))
        for name, value in response.items()
        if name.lower() != "content-length"
    ]


@dataclass
class _Candidate:
    room_id: int
    before: int | None
    limit: int
    raw_token: str
    secure: bool
    request_id: str
    ajax: bool


def _candidate(scope: dict[str, Any], current: Plan) -> _Candidate | None:
    """The request as the fast lane would serve it, or None: Django answers it."""
    if scope["method"] != "GET" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not (path.startswith(current.path_prefix) and path.endswith(current.path_suffix)):
        return None
    room_part = path[len(current.path_prefix) : len(path) - len(current.path_suffix)]
    if not ROOM_ID_RE.fullmatch(room_part):
        return None
    proxy_name = current.proxy_header
    seen: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in seen and name in (b"authorization", b"accept-encoding", b"host", proxy_name):
            return None  # Django would join them with commas; leave that to Django
        seen[name] = value
        if name in (b"content-length", b"transfer-encoding") and value != b"0":
            return None
    authorization = seen.get(b"authorization", b"")
    if not authorization.startswith(BEARER_PREFIX):
        return None
    raw_token = authorization[len(BEARER_PREFIX) :].decode("latin-1")
    # django-ninja's HttpBearer splits on spaces and BearerTokenAuth strips:
    # anything but one plain token is left to them.
    if not raw_token or raw_token.strip() != raw_token or " " in raw_token:
        return None
    if preferred_coding(seen.get(b"accept-encoding", b"").decode("latin-1")) != "br":
        return None
    host = seen.get(b"host")
    allowed = current.hosts.get(host) if host is not None else False
    if allowed is None:
        allowed = _host_allowed(host)
        if len(current.hosts) < MEMO_SIZE:
            current.hosts[host] = allowed  # type: ignore[index]
    if not allowed:
        return None
    if proxy_name and proxy_name in seen:
        # HttpRequest.scheme with SECURE_PROXY_SSL_HEADER.
        secure = seen[proxy_name].decode("latin-1").split(",", 1)[0].strip() == current.proxy_https
    else:
        secure = scope.get("scheme") == "https"
    position = _query(scope.get("query_string", b""))
    if position is None:
        return None
    before, limit = position
    return _Candidate(
        room_id=int(room_part),
        before=before,
        limit=selectors.page_limit(limit),
        raw_token=raw_token,
        secure=secure,
        request_id=context.request_id_from(seen.get(b"x-request-id")),
        ajax=seen.get(b"x-requested-with") == b"XMLHttpRequest",
    )


def _host_allowed(host: bytes) -> bool:
    """HttpRequest.get_host's check, as an answer rather than a 400 (no Host header: Django decides)."""
    domain, _port = split_domain_port(host.decode("latin-1"))
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def _query(query_string: bytes) -> tuple[int | None, int | None] | None:
    """(before, limit) from the query string, or None when it asks for more than a shared page."""
    if not query_string:
        return None, None
    if not query_string.isascii():
        return None
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    params = dict(pairs)
    if len(params) != len(pairs) or not set(params) <= {"cursor", "limit"}:
        return None
    limit = None
    if "limit" in params:
        if not LIMIT_RE.fullmatch(params["limit"]):
            return None
        limit = int(params["limit"])
    before = None
    if "cursor" in params:
        try:
            position = page_cursor_decode(params["cursor"], fields={"b": int, "a": int})
        except ChatError:
            return None
        if set(position) != {"b"}:
            return None
        before = position["b"]
    return before, limit


class HistoryFastLane:
    """ASGI: shared history pages from the cache; every other request to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            current = plan()
            if current.enabled and await self._serve(scope, send, current):
                return
        await self.app(scope, receive, send)

    async def _serve(self, scope: dict[str, Any], send: Any, current: Plan) -> bool:
        start = time.perf_counter()
        try:
            candidate = _candidate(scope, current)
        except Exception:  # noqa: BLE001 - a request the lane cannot read is Django's to answer
            logger.warning("history fast lane could not read a request; Django answers it", exc_info=True)
            return False
        if candidate is None:
            return False
        if current.headers.get((candidate.secure, True)) is None:
            return False
        loop = asyncio.get_running_loop()
        client = current.client[1] if current.client[0] is loop else None
        if client is None:
            client = aredis.client()
            if client is None:
                return False
            current.client = (loop, client)
        try:
            found = await _lookup(client, candidate, current)
        except Exception:  # noqa: BLE001 - Django's path degrades to the database and logs it
            return False
        if found is None:
            return False
        user_id, brotli, body = found
        response_headers = [
            *current.headers[(candidate.secure, brotli)],  # type: ignore[misc]
            (b"Content-Length", str(len(body)).encode("ascii")),
            (b"X-Request-ID", candidate.request_id.encode("ascii")),
        ]
        if brotli and CompressionMiddleware.max_random_bytes:
            noise = token_urlsafe(randbelow(CompressionMiddleware.max_random_bytes + 1))
            response_headers.append((b"X-Noise", noise.encode("ascii")))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - start
        HTTP_FAST_LANE.inc()
        perf_cache.count_hits(SERVED_FAMILIES)
        if current.prometheus:
            perf_metrics.http_response_counted(
                view=current.view_name,
                method="GET",
                transport="https" if candidate.secure else "http",
                status=200,
                charset="utf-8",
                body_bytes=len(body),
                elapsed=elapsed,
                ajax=candidate.ajax,
            )
        if current.request_log:
            perf_metrics.request_served(
                method="GET",
                path=scope["path"],
                status=200,
                elapsed=elapsed,
                user_id=user_id,
                view=current.view_name,
                request_id=candidate.request_id,
                cache_hits=len(SERVED_FAMILIES),
            )
        return True


async def _lookup(client: Any, candidate: _Candidate, current: Plan) -> tuple[int, bool, bytes] | None:
    """(the reader's id, whether the body is brotli, the body), or None when anything is not in the cache as needed.

    One round trip when this process has seen the token before, two otherwise.
    """
    make_key = current.make_key
    token_key = selectors.token_cache_key(ApiToken.hash_key(candidate.raw_token))
    guess = current.token_users.get(token_key)
    if guess is not None:
        raw_user, *rest = await client.mget([make_key(token_key), *_page_keys(candidate, guess, current)])
        if _user_id(raw_user, current) != guess:
            current.token_users.pop(token_key, None)
            return None
        return _page(guess, rest, current)
    (raw_user,) = await client.mget([make_key(token_key)])
    user_id = _user_id(raw_user, current)
    if user_id is None:
        return None
    if len(current.token_users) >= MEMO_SIZE:
        current.token_users.clear()
    current.token_users[token_key] = user_id
    return _page(user_id, await client.mget(_page_keys(candidate, user_id, current)), current)


def _user_id(raw_user: bytes | None, current: Plan) -> int | None:
    """The active user in a token entry (its stored bytes), or None."""
    if raw_user is None:
        return None
    user_id = current.users.get(raw_user)
    if user_id is None:
        user = current.decode(raw_user)
        user_id = getattr(user, "pk", None)
        if user_id is None or not getattr(user, "is_active", False):
            return None
        if len(current.users) >= MEMO_SIZE:
            current.users.clear()
        current.users[raw_user] = user_id
    return user_id


def _page_keys(candidate: _Candidate, user_id: int, current: Plan) -> list[str]:
    """Redis keys of the room, the user's access to it, the page and its stamps (the order _page reads)."""
    keys = [
        selectors.room_cache_key(candidate.room_id),
        selectors.room_access_key(user_id, candidate.room_id),
        selectors.history_page_key(candidate.room_id, candidate.before, candidate.limit),
        *selectors.history_page_stamps(candidate.room_id, candidate.before),
    ]
    return [current.make_key(k) for k in keys]


def _page(user_id: int, raw: list[bytes | None], current: Plan) -> tuple[int, bool, bytes] | None:
    decode = current.decode
    raw_room, raw_role, raw_page, *raw_stamps = raw
    # The room entry holds the room or the miss marker: the room itself is not needed.
    if raw_room is None or raw_room == current.none_raw or raw_role is None or raw_page is None or None in raw_stamps:
        return None
    role = decode(raw_role)
    if not role or role == perf_cache.NONE:
        return None
    entry = decode(raw_page)
    if entry[0] != [decode(s) for s in raw_stamps]:
        return None
    # The client prefers brotli (_candidate); a page too small to compress
    # goes to every client as it is.
    sent = sent_as_stored(entry[1])
    if sent is None:
        return None
    return user_id, sent == "br", entry[1][3]
