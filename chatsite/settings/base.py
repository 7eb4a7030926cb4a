"""Settings shared by every mode. Values come from chatsite.env."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from chatsite import env
from perf import redis as perf_redis

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env.SECRET_KEY or "insecure-development-key-change-me"
DEBUG = env.DEBUG
ALLOWED_HOSTS = env.ALLOWED_HOSTS
CSRF_TRUSTED_ORIGINS = env.CSRF_TRUSTED_ORIGINS
# Proxies whose forwarded headers set the client address and scheme (chatsite.asgi).
TRUSTED_PROXIES = env.TRUSTED_PROXIES

INSTALLED_APPS = [
    "daphne",
    # django.contrib.admin, with its log-in under the log-in limits (chat.admin_site).
    "chatsite.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "ninja",
    "projects",
    "chat",
    "perf",
    # The profiler's UI at /silk/ (staff only); its middleware only when sampling (see below).
    "silk",
]

# Django's ASGI handler runs this chain asynchronously. The project's own
# middlewares are async (no thread hop); Django's are adapted by Django.
MIDDLEWARE = [
    # First: X-Request-ID on every response, request log, query and cache totals
    # over the whole stack, the per-request permission memo.
    "perf.middleware.RequestContextMiddleware",
    # The API's 405 as its JSON body; 503 for a view that meets an unavailable database.
    "chatsite.middleware.ErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Above everything that reads or changes the response body (perf.compression).
    "perf.compression.CompressionMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# PostgreSQL through psycopg 3 and Django's native pool when DATABASE_URL is
# set; SQLite otherwise (the embedded default of `make run`).
if env.DATABASE_URL:
    _db = dj_database_url.parse(env.DATABASE_URL)
    # django-prometheus's engine subclasses Django's postgresql backend (pool
    # included) and counts and times every statement.
    _db["ENGINE"] = "django_prometheus.db.backends.postgresql" if env.ENABLE_METRICS else "django.db.backends.postgresql"
    # The pool and persistent connections exclude each other.
    _db["CONN_MAX_AGE"] = 0
    _db["CONN_HEALTH_CHECKS"] = True
    _db["OPTIONS"] = {
        "pool": {
            "min_size": max(1, min(env.DB_POOL_SIZE, 4)),
            "max_size": env.DB_POOL_SIZE + env.DB_MAX_OVERFLOW,
            "timeout": env.DB_POOL_TIMEOUT,
            "max_lifetime": env.DB_POOL_RECYCLE,
        },
    }
    DATABASES = {"default": _db}
    if env.DATABASE_REPLICA_URL:
        # A streaming standby for the reads perf.replica.may_lag lets it answer, and only when it has caught up.
        _replica = dj_database_url.parse(env.DATABASE_REPLICA_URL)
        _replica.update(ENGINE=_db["ENGINE"], CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=True)
        _replica["OPTIONS"] = {
            # A standby that does not answer costs a read this long before it goes to the primary.
            "connect_timeout": max(1, round(env.DATABASE_REPLICA_TIMEOUT)),
            "pool": {**_db["OPTIONS"]["pool"], "min_size": 1, "timeout": env.DATABASE_REPLICA_TIMEOUT},
        }
        # Test runs have one database: the replica alias reads the test database.
        _replica["TEST"] = {"MIRROR": "default"}
        DATABASES["replica"] = _replica
        DATABASE_ROUTERS = ["perf.replica.ReplicaRouter"]
        DATABASE_REPLICA_RETRY = env.DATABASE_REPLICA_RETRY
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / env.SQLITE_PATH,
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, sessions, channel layer ---------------------------------------
if env.REDIS_URL and env.ENABLE_CACHING:
    CACHES = {
        "default": {
            # django-prometheus's subclass of django-redis counts gets, hits and misses.
            "BACKEND": (
                "django_prometheus.cache.backends.redis.RedisCache" if env.ENABLE_METRICS else "django_redis.cache.RedisCache"
            ),
            "LOCATION": env.REDIS_URL,
            "TIMEOUT": env.CACHE_TTL,
            # Entries hold ids of this database: another database on the same
            # Redis (a second deployment, a benchmark) gets other keys.
            "KEY_PREFIX": env.CACHE_KEY_PREFIX or f"chat:{DATABASES['default']['NAME'] if env.DATABASE_URL else 'sqlite'}",
            "VERSION": 1,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # One redis.Redis per process, not one per request or socket; through the Sentinels when
                # REDIS_SENTINELS is set (perf.redis).
                **perf_redis.cache_options(),
                "PARSER_CLASS": "redis.connection._HiredisParser",
                # A Redis outage degrades to the database instead of a 500.
                "IGNORE_EXCEPTIONS": True,
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }
elif env.ENABLE_CACHING:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "TIMEOUT": env.CACHE_TTL,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "perf.cache.redis"

# cached_db: reads hit the cache, every write also lands in the database, so a
# Redis restart never logs anyone out.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

_layer_prefix = env.CHANNEL_LAYER_PREFIX or "chat:layer:" + (urlparse(env.REDIS_URL).path.strip("/") or "0")

# The background worker's channel, namespaced like the layer for the same reason.
CHAT_BACKGROUND_CHANNEL = "chat-background." + re.sub(r"[^A-Za-z0-9_.-]", "-", _layer_prefix)

# The "core" layer's Redis pool; a setting left at 0 keeps redis-py's default (chatsite/env.py).
_core_layer_pool: dict[str, object] = {}
if env.CHANNEL_LAYER_MAX_CONNECTIONS > 0:
    _core_layer_pool["max_connections"] = env.CHANNEL_LAYER_MAX_CONNECTIONS
if env.CHANNEL_LAYER_SOCKET_TIMEOUT > 0:
    _core_layer_pool["socket_timeout"] = env.CHANNEL_LAYER_SOCKET_TIMEOUT
_core_layer_host = perf_redis.channel_layer_host(**_core_layer_pool)
if isinstance(_core_layer_host, str):
    _core_layer_host = {"address": _core_layer_host}

if env.REDIS_URL and env.CHANNEL_LAYER == "core":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [_core_layer_host],
                "prefix": _layer_prefix,
                "capacity": env.CHANNEL_LAYER_CAPACITY,
                "expiry": env.CHANNEL_LAYER_EXPIRY,
                "group_expiry": env.CHANNEL_LAYER_GROUP_EXPIRY,
            },
        }
    }
elif env.REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [perf_redis.channel_layer_host()], "prefix": _layer_prefix},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"
# JSON under /api/ (the API's documentation pages are CSRF-checked views), Django's page elsewhere.
CSRF_FAILURE_VIEW = "chatsite.error_handlers.csrf_failure"

# --- I18N / static --------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / env.STATIC_ROOT
# Shared files go through Django's storage API (chat.services.uploads); they are
# served only after an access check (chat.views.file_download), never from MEDIA_URL.
MEDIA_ROOT = BASE_DIR / env.MEDIA_ROOT
MEDIA_URL = "/media-not-served/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


def s3_storage(*, bucket: str, endpoint_url: str, region: str, access_key: str, secret_key: str, expire: int) -> dict:
    """django-storages' S3 backend: private objects, read through signed URLs that expire."""
    if not bucket:
        raise ImproperlyConfigured("FILE_STORAGE=s3 needs S3_BUCKET.")
    options = {
        "bucket_name": bucket,
        "default_acl": "private",
        "querystring_auth": True,
        "querystring_expire": expire,
        "file_overwrite": False,
    }
    if endpoint_url:  # another S3-compatible server: its buckets are paths, not host names
        options |= {"endpoint_url": endpoint_url, "addressing_style": "path"}
    if region:
        options["region_name"] = region
    if access_key:
        options |= {"access_key": access_key, "secret_key": secret_key}
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


if env.FILE_STORAGE == "s3":
    STORAGES["default"] = s3_storage(
        bucket=env.S3_BUCKET, endpoint_url=env.S3_ENDPOINT_URL, region=env.S3_REGION,
        access_key=env.S3_ACCESS_KEY_ID, secret_key=env.S3_SECRET_ACCESS_KEY, expire=env.S3_URL_EXPIRE,
    )  # fmt: skip
elif env.FILE_STORAGE != "local":
    raise ImproperlyConfigured(f"FILE_STORAGE must be 'local' or 's3', not {env.FILE_STORAGE!r}.")
CHAT_UPLOAD_MAX_BYTES = env.UPLOAD_MAX_BYTES
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if env.EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = env.EMAIL_HOST or "localhost"
EMAIL_PORT = env.EMAIL_PORT
EMAIL_HOST_USER = env.EMAIL_HOST_USER
EMAIL_HOST_PASSWORD = env.EMAIL_HOST_PASSWORD
EMAIL_USE_TLS = env.EMAIL_USE_TLS
EMAIL_TIMEOUT = 20
DEFAULT_FROM_EMAIL = env.DEFAULT_FROM_EMAIL
CHAT_PUBLIC_URL = env.PUBLIC_URL.rstrip("/")
CHAT_DIGEST_DELAY = env.NOTIFY_DIGEST_DELAY * 60
CHAT_DIGEST_CHECK = env.NOTIFY_DIGEST_CHECK
# A multipart body stops being read past this (chat.upload_limit): a file too large costs no disk.
FILE_UPLOAD_HANDLERS = [
    "chat.upload_limit.SizeLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# --- Chat -----------------------------------------------------------------
CHAT_MESSAGE_MAX_LENGTH = 10_000
CHAT_PAGE_SIZE = 50
CHAT_PAGE_SIZE_MAX = 100
CHAT_CACHE_WARM_ROOMS = env.CACHE_WARM_ROOMS
CHAT_CACHE_WARM_PAGES = env.CACHE_WARM_PAGES
CHAT_CACHE_WARM_EVERY = env.CACHE_WARM_EVERY
CHAT_CACHE_WARM_CHECK = env.CACHE_WARM_CHECK
CHAT_RESUME_MAX_MESSAGES = env.RESUME_MAX_MESSAGES
CHAT_PINS_MAX = env.PINS_MAX
CHAT_SEARCH_CONFIG = env.SEARCH_CONFIG
CHAT_SEARCH_RANK_WINDOW = env.SEARCH_RANK_WINDOW
CHAT_SEARCH_HALF_LIFE_DAYS = env.SEARCH_HALF_LIFE_DAYS
DEMO_PASSWORD = env.DEMO_PASSWORD
CHAT_WS_BATCH_WINDOW = env.WS_BATCH_WINDOW_MS / 1000
CHAT_REACTION_WINDOW = env.REACTION_WINDOW_MS / 1000
CHAT_WS_SEND_BUFFER_BYTES = env.WS_SEND_BUFFER_BYTES
CHAT_WS_MAX_SOCKETS_PER_USER = env.WS_MAX_SOCKETS_PER_USER
CHAT_WS_SUBSCRIBE_RATE = env.WS_SUBSCRIBE_RATE
CHAT_WS_AUTH_RECHECK = env.WS_AUTH_RECHECK
CHAT_DB_THREADS = env.WS_DB_THREADS
CHAT_SEND_GROUPS = env.WS_SEND_GROUPS
CHAT_SEND_GROUP_MAX = env.WS_SEND_GROUP_MAX
CHAT_RESUME_GROUPS = env.WS_RESUME_GROUPS
CHAT_RESUME_GROUP_MAX = env.WS_RESUME_GROUP_MAX
CHAT_WS_TYPING_INTERVAL = env.WS_TYPING_INTERVAL
CHAT_PRESENCE_TTL = env.PRESENCE_TTL
CHAT_PRESENCE_INTERVAL = env.PRESENCE_INTERVAL
CHAT_PRESENCE_BROADCAST_MAX = env.PRESENCE_BROADCAST_MAX

RATE_LIMITS = {
    "message": env.RATE_LIMIT_MESSAGES,  # per user, WebSocket and API together
    # Failed log-ins (chatsite.login_policy: /login/, /admin/login/, the token API).
    "login_pair": env.RATE_LIMIT_LOGIN_PAIR,  # per username and client address
    "login_ip": env.RATE_LIMIT_LOGIN_IP,  # per client address, across usernames (sign-ups count too)
    "login_account": env.RATE_LIMIT_LOGIN_ACCOUNT,  # per username, across addresses
    "token": env.RATE_LIMIT_TOKENS,  # tokens issued per user
    "room_create": env.RATE_LIMIT_ROOMS,  # per user
    "subscribe": env.RATE_LIMIT_SUBSCRIBES,  # per user, every socket and server process
    "invite": env.RATE_LIMIT_INVITES,  # project invitations sent per inviter, pages and API
    "invite_link": env.RATE_LIMIT_INVITE_LINKS,  # invite links made per user, pages and API
    "reaction": env.RATE_LIMIT_REACTIONS,  # reactions added or removed per user, WebSocket and API together
    "upload": env.RATE_LIMIT_UPLOADS,  # files shared per user, pages and API
    "search": env.RATE_LIMIT_SEARCHES,  # message searches per user
}

# Request bodies above this are refused with 400 before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        # stderr, written by a thread of its own ("log-writer"): the thread that
        # logs, the event loop's above all, only queues the line (perf/logqueue.py).
        "console": {"class": "perf.logqueue.QueuedStreamHandler", "formatter": "plain"},
        "cache_errors": {"class": "perf.cache.CacheErrorCountingHandler"},
        "slow_queries": {"class": "perf.metrics.SlowQueryCountingHandler"},
    },
    "root": {"handlers": ["console"], "level": env.LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # django-redis logs every error it ignores here; the handler counts them.
        "perf.cache.redis": {"handlers": ["cache_errors"], "level": "WARNING"},
        # perf.db logs one line per slow statement; the handler counts them.
        "perf.slow_query": {"handlers": ["slow_queries"], "level": "WARNING"},
        "perf.request": {"level": "INFO" if env.ENABLE_REQUEST_LOG else "WARNING"},
        # silk's profiler module decorates a sample function of its own at import
        # and warns that the middleware is missing whenever sampling is off.
        "silk.profiling.profiler": {"level": "ERROR"},
    },
}

# --- Performance ----------------------------------------------------------
# Statements slower than this (seconds) are logged by "perf.slow_query".
SLOW_QUERY_THRESHOLD = env.SLOW_QUERY_THRESHOLD

# Response compression (perf.compression.CompressionMiddleware): brotli when
# the client accepts it, else gzip; bodies below the minimum go out as they are.
COMPRESSION_ENABLED = env.ENABLE_COMPRESSION
COMPRESSION_GZIP_LEVEL = env.COMPRESSION_LEVEL
COMPRESSION_BROTLI_QUALITY = env.BROTLI_QUALITY
COMPRESSION_MIN_LENGTH = 1024


# --- Metrics and profiling ---------------------------------------------------
# docs/MONITORING.md. Metrics: django-prometheus (HTTP, database, cache) and
# the project's own (chat.metrics, perf.cache, perf.metrics), served by
# `manage.py serve_metrics` on METRICS_BIND:METRICS_PORT, not on this site.
METRICS_ENABLED = env.ENABLE_METRICS
METRICS_PORT = env.METRICS_PORT
METRICS_BIND = env.METRICS_BIND
# Fine enough to read p50/p95/p99 between 1 ms and 2 s (HTTP and database).
PROMETHEUS_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, float("inf"),
)
PROMETHEUS_EXPORT_MIGRATIONS = False
if METRICS_ENABLED:
    INSTALLED_APPS.append("django_prometheus")
    # Outermost and innermost, as django-prometheus asks: "before" times the
    # whole stack, "after" the view by name and method.
    MIDDLEWARE.insert(0, "django_prometheus.middleware.PrometheusBeforeMiddleware")
    MIDDLEWARE.append("django_prometheus.middleware.PrometheusAfterMiddleware")

# django-silk. The UI (/silk/) is always there for staff; requests are recorded
# and profiled only when SILKY_INTERCEPT_PERCENT > 0, and at 0 its middleware is
# not installed at all, so the request path does not pay for it.
SILKY_INTERCEPT_PERCENT = env.SILKY_INTERCEPT_PERCENT
if SILKY_INTERCEPT_PERCENT > 0:
    # Below compression (silk sees the plain response), above sessions and auth
    # (their queries are part of what it records).
    MIDDLEWARE.insert(MIDDLEWARE.index("perf.compression.CompressionMiddleware") + 1, "silk.middleware.SilkyMiddleware")
SILKY_AUTHENTICATION = True
SILKY_AUTHORISATION = True


def SILKY_PERMISSIONS(user):  # noqa: N802 - the setting's name
    return user.is_staff


SILKY_PYTHON_PROFILER = True
# Bodies hold messages and credentials: keep timings, queries and profiles only.
SILKY_MAX_REQUEST_BODY_SIZE = 0
SILKY_MAX_RESPONSE_BODY_SIZE = 0
SILKY_MAX_RECORDED_REQUESTS = env.SILKY_MAX_RECORDED_REQUESTS
# Never trim in the request path: `manage.py silk_gc` does it.
SILKY_MAX_RECORDED_REQUESTS_CHECK_PERCENT = 0
SILKY_IGNORE_PATHS = ["/healthz"]


# --- Content Security Policy (django-csp) ------------------------------------
# Templates carry no inline script, handler or style (json_script blocks are
# data, not executed); everything loads from this origin; WebSockets connect
# back to it ('self' covers ws:/wss: of the same host in current browsers).
from csp.constants import NONE, SELF  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}
