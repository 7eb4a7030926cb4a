"""Every environment variable the project reads, with its documented default.

Settings modules and ``chatsite.server`` import from here; nothing else reads
``os.environ`` (``chatsite.server`` only hands its own choices to the
processes it starts through it). The table in docs/CONFIGURATION.md mirrors
this file.
"""

from __future__ import annotations

import os


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return [part.strip() for part in raw.split(",") if part.strip()]


# Core
SECRET_KEY = env_str("SECRET_KEY", "")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Addresses (IPs or CIDR networks) of the reverse proxies whose X-Forwarded-For
# and X-Forwarded-Proto are believed (chatsite.asgi). Empty: nobody's; the
# client address is the socket's peer and the scheme the connection's.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# Port `make run` serves on (and seed_demo prints).
PORT = env_int("PORT", 8000)

# The server (python -m chatsite.server): uvicorn or daphne; processes on one
# port (uvicorn only, with Redis); start-up objects out of the cyclic GC's reach.
ASGI_SERVER = env_str("ASGI_SERVER", "") or "uvicorn"
SERVER_WORKERS = env_int("SERVER_WORKERS", 0) or env_int("WEB_CONCURRENCY", 0) or 1
SERVER_GC_FREEZE = env_str("SERVER_GC_FREEZE", "1") != "0"
# Young-generation collections between two full ones (Python's default: 10).
SERVER_GC_FULL_EVERY = env_int("SERVER_GC_FULL_EVERY", 100)
# WebSocket permessage-deflate under uvicorn, each message compressed once for
# all sockets (perf.ws_deflate); false: frames go uncompressed.
WS_DEFLATE = env_bool("WS_DEFLATE", True)

# Services. Empty means "embedded default" (SQLite, in-memory layer, local-memory cache).
DATABASE_URL = env_str("DATABASE_URL", "")
REDIS_URL = env_str("REDIS_URL", "")
# Redis through Sentinel: host:port of each Sentinel, comma-separated. When set,
# REDIS_URL's host is the name the Sentinels monitor (redis://<name>/<db>) and
# every Redis client asks them where that primary is now (perf.redis).
REDIS_SENTINELS = env_list("REDIS_SENTINELS", [])
# A streaming standby of DATABASE_URL for reads that may be served from it
# (perf.replica): only when it has replayed everything the primary had
# committed when the read began. Empty: every read goes to DATABASE_URL.
DATABASE_REPLICA_URL = env_str("DATABASE_REPLICA_URL", "")
# Seconds a read waits for a replica connection before it goes to the primary.
DATABASE_REPLICA_TIMEOUT = env_float("DATABASE_REPLICA_TIMEOUT", 1.0)
# Seconds the replica is left alone after it failed (down, or not a standby).
DATABASE_REPLICA_RETRY = env_float("DATABASE_REPLICA_RETRY", 5.0)
# Where the embedded SQLite database lives when DATABASE_URL is empty.
SQLITE_PATH = env_str("SQLITE_PATH", "var/db.sqlite3")
# Where collectstatic writes (relative paths are under the project directory).
STATIC_ROOT = env_str("STATIC_ROOT", "var/staticfiles")
# Where shared files are stored (Django's file system storage; relative paths are under the project directory).
MEDIA_ROOT = env_str("MEDIA_ROOT", "var/media")
# E-mail (Django's SMTP backend) for the digest of unread mentions and DMs
# (chat.services.notifications). Empty EMAIL_HOST: e-mails are printed to the
# log (development) and nothing is sent.
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "chat@localhost")
# The site's address as people reach it, for links in e-mails.
PUBLIC_URL = env_str("PUBLIC_URL", "http://127.0.0.1:8000")
# Minutes after a mention or DM before it goes into an e-mail if still unread; seconds between the worker's checks.
NOTIFY_DIGEST_DELAY = env_int("NOTIFY_DIGEST_DELAY", 30)
NOTIFY_DIGEST_CHECK = env_float("NOTIFY_DIGEST_CHECK", 60.0)
# Where shared files go: "local" (MEDIA_ROOT) or "s3", an S3-compatible bucket (django-storages).
FILE_STORAGE = env_str("FILE_STORAGE", "local")
S3_BUCKET = env_str("S3_BUCKET", "")
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL", "")  # empty: AWS itself
S3_REGION = env_str("S3_REGION", "")
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID", "")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY", "")
# Seconds a download link to the bucket stays valid (a reader is redirected there after the access check).
S3_URL_EXPIRE = env_int("S3_URL_EXPIRE", 300)
# The largest file a user may share, in bytes (10 MB).
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 10 * 1024 * 1024)

# Database pool (ADR-008 names; mapped onto psycopg_pool min/max size).
DB_POOL_SIZE = env_int("DB_POOL_SIZE", 10)
DB_MAX_OVERFLOW = env_int("DB_MAX_OVERFLOW", 20)
DB_POOL_TIMEOUT = env_float("DB_POOL_TIMEOUT", 30.0)
DB_POOL_RECYCLE = env_float("DB_POOL_RECYCLE", 3600.0)
SLOW_QUERY_THRESHOLD = env_float("SLOW_QUERY_THRESHOLD", 0.1)

# Caching
CACHE_TTL = env_int("CACHE_TTL", 300)
# TTL of the small, exactly invalidated cache entries: single messages, user
# profiles, rooms, access, room lists, tokens, projects and each room's current
# unread tail (perf.cache.register_family, the unread tail's UNREAD_TAIL_TTL). Every change
# to one drops or rewrites its entry after commit, so this TTL only bounds
# memory; at CACHE_TTL, what a reader opened five minutes ago was read from the
# database again (docs/PERFORMANCE.md).
CACHE_TTL_ENTRIES = env_int("CACHE_TTL_ENTRIES", 3600)
# TTL of a "no such thing" entry (a room, token or project id that does not
# exist): short, so whoever sends unknown ids cannot fill the cache with them.
CACHE_TTL_MISSING = env_int("CACHE_TTL_MISSING", 15)
# Cache key prefix. Default: "chat:<database name>", so two databases that share
# one Redis database never read each other's entries (ids repeat across them).
CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX", "")
ENABLE_CACHING = env_bool("ENABLE_CACHING", True)
# Cache warming (chat.warming, run by the background worker): the rooms with the
# newest messages whose history (CACHE_WARM_PAGES default-size pages, newest
# first), room entry and unread tail are filled before readers ask (0: off), and
# how often the worker fills what is missing again. It also runs within
# CACHE_WARM_CHECK seconds of the cache being emptied.
CACHE_WARM_ROOMS = env_int("CACHE_WARM_ROOMS", 500)
CACHE_WARM_PAGES = env_int("CACHE_WARM_PAGES", 5)
CACHE_WARM_EVERY = env_int("CACHE_WARM_EVERY", 1800)
CACHE_WARM_CHECK = env_float("CACHE_WARM_CHECK", 30.0)

# Response compression (perf.compression): brotli quality when the client
# accepts br, gzip level otherwise.
ENABLE_COMPRESSION = env_bool("ENABLE_COMPRESSION", True)
COMPRESSION_LEVEL = env_int("COMPRESSION_LEVEL", 5)
BROTLI_QUALITY = env_int("BROTLI_QUALITY", 4)

# Chat behaviour
DEMO_PASSWORD = env_str("DEMO_PASSWORD", "chat-demo-pass")
RESUME_MAX_MESSAGES = env_int("RESUME_MAX_MESSAGES", 500)
PINS_MAX = env_int("PINS_MAX", 100)
# Message search (chat.selectors.search). The PostgreSQL text search
# configuration of the body index and of every query: "simple" lowercases and
# splits words without stemming or stop words, so any language, names and code
# identifiers match as typed; "english" would stem ("deploys" finds "deployed")
# but drop words like "the" and mangle other languages. Changing it needs the
# index rebuilt (manage.py search_index).
SEARCH_CONFIG = env_str("SEARCH_CONFIG", "simple")
# How many of the newest matches are ordered by relevance and recency at a
# time; the next window holds the next older matches (docs/API.md "Search").
SEARCH_RANK_WINDOW = env_int("SEARCH_RANK_WINDOW", 50)
# Relevance halves for every this many days of a message's age.
SEARCH_HALF_LIFE_DAYS = env_float("SEARCH_HALF_LIFE_DAYS", 7.0)
# "pubsub" (RedisPubSubChannelLayer: one PUBLISH per event, fan-out in each
# process) or "core" (RedisChannelLayer: a queue per socket). See docs/PERFORMANCE.md.
CHANNEL_LAYER = env_str("CHANNEL_LAYER", "pubsub")
# Redis pub/sub channels are global to the server, not per database number:
# the prefix keeps deployments (and test runs) sharing one Redis apart.
# Default: "chat:layer:<db number of REDIS_URL>".
CHANNEL_LAYER_PREFIX = env_str("CHANNEL_LAYER_PREFIX", "")
CHANNEL_LAYER_CAPACITY = env_int("CHANNEL_LAYER_CAPACITY", 1000)
CHANNEL_LAYER_EXPIRY = env_int("CHANNEL_LAYER_EXPIRY", 60)
CHANNEL_LAYER_GROUP_EXPIRY = env_int("CHANNEL_LAYER_GROUP_EXPIRY", 86400)
# Redis connections per process for the "core" layer. redis-py's own default
# pool (100) refuses the 101st concurrent command with MaxConnectionsError, which
# 2,000 sockets subscribing at once reach (docs/PERFORMANCE.md). 0: redis-py's default.
CHANNEL_LAYER_MAX_CONNECTIONS = env_int("CHANNEL_LAYER_MAX_CONNECTIONS", 1000)
# Socket read timeout (s) of the "core" layer's Redis connections. It must exceed
# the layer's 5 s blocking BZPOPMIN: redis-py 8's default of 5 s makes every idle
# consumer's receive fail with TimeoutError (django/channels_redis#422). 0: redis-py's default.
CHANNEL_LAYER_SOCKET_TIMEOUT = env_int("CHANNEL_LAYER_SOCKET_TIMEOUT", 10)

# HTTP: seconds a request's whole body has to arrive once its headers are in,
# else 408 (chatsite.http_timeouts; uvicorn only, daphne buffers bodies first). 0: no deadline.
HTTP_BODY_TIMEOUT = env_float("HTTP_BODY_TIMEOUT", 30.0)
# HTTP: seconds uvicorn keeps an idle connection open after a response, waiting for the next request.
HTTP_KEEPALIVE_TIMEOUT = env_int("HTTP_KEEPALIVE_TIMEOUT", 5)

# Real-time delivery (chat.consumers)
WS_BATCH_WINDOW_MS = env_float("WS_BATCH_WINDOW_MS", 2.0)
# How long a message's reaction changes are gathered into one `reaction` event (per server process).
REACTION_WINDOW_MS = env_float("REACTION_WINDOW_MS", 100.0)
# HTTP: threads per server process that run requests through Django's handler,
# one request each at a time (chatsite.asgi).
HTTP_THREADS = env_int("HTTP_THREADS", 8)
# Threads that run consumers' database work in parallel (chat.asyncdb).
WS_DB_THREADS = env_int("WS_DB_THREADS", 8)
# Groups of message sends written at once per server process; sends that arrive
# meanwhile wait and go together, at most WS_SEND_GROUP_MAX in one statement (chat.sending).
WS_SEND_GROUPS = env_int("WS_SEND_GROUPS", 2)
WS_SEND_GROUP_MAX = env_int("WS_SEND_GROUP_MAX", 200)
# The same for subscribes (access, counters and backlogs read together: chat.resuming).
WS_RESUME_GROUPS = env_int("WS_RESUME_GROUPS", 2)
WS_RESUME_GROUP_MAX = env_int("WS_RESUME_GROUP_MAX", 500)
# Bytes of frames a socket may have pending before low-priority ones are dropped
# and, past that, it is closed (4408); a resume replays at most half of it.
WS_SEND_BUFFER_BYTES = env_int("WS_SEND_BUFFER_BYTES", 1024 * 1024)
# Open sockets per user, across every server process (more: closed with 4429).
WS_MAX_SOCKETS_PER_USER = env_int("WS_MAX_SOCKETS_PER_USER", 30)
# Subscribes per socket, as count/seconds (kept in the socket; RATE_LIMIT_SUBSCRIBES is per user).
WS_SUBSCRIBE_RATE = env_str("WS_SUBSCRIBE_RATE", "300/60")
# How often (seconds) an open socket's credentials are checked again: an expired
# session ends it within this (a logout, a deleted token or user act at once, by an event).
WS_AUTH_RECHECK = env_int("WS_AUTH_RECHECK", 300)
WS_TYPING_INTERVAL = env_float("WS_TYPING_INTERVAL", 3.0)
WS_PING_INTERVAL = env_int("WS_PING_INTERVAL", 20)
WS_PING_TIMEOUT = env_int("WS_PING_TIMEOUT", 30)
PRESENCE_TTL = env_int("PRESENCE_TTL", 60)
# Seconds a server process gathers a room's joins and leaves before it sends them as one presence event.
PRESENCE_INTERVAL = env_float("PRESENCE_INTERVAL", 1.0)
# Rooms with more people online than this get no presence digests (clients ask about whom they show).
PRESENCE_BROADCAST_MAX = env_int("PRESENCE_BROADCAST_MAX", 100)

# Rate limits as "count/seconds" (chatsite.ratelimit). Empty disables one.
RATE_LIMIT_MESSAGES = env_str("RATE_LIMIT_MESSAGES", "120/60")
# Failed log-ins (chatsite.login_policy): per username and address, per address
# (sign-ups count too), and per username across addresses. Past the account
# limit only addresses that have not failed for that username may still try.
RATE_LIMIT_LOGIN_PAIR = env_str("RATE_LIMIT_LOGIN_PAIR", "5/300")
RATE_LIMIT_LOGIN_IP = env_str("RATE_LIMIT_LOGIN_IP", "50/300")
RATE_LIMIT_LOGIN_ACCOUNT = env_str("RATE_LIMIT_LOGIN_ACCOUNT", "20/300")
RATE_LIMIT_TOKENS = env_str("RATE_LIMIT_TOKENS", "10/300")
RATE_LIMIT_ROOMS = env_str("RATE_LIMIT_ROOMS", "30/3600")
RATE_LIMIT_SUBSCRIBES = env_str("RATE_LIMIT_SUBSCRIBES", "600/60")
RATE_LIMIT_REACTIONS = env_str("RATE_LIMIT_REACTIONS", "300/60")
RATE_LIMIT_INVITES = env_str("RATE_LIMIT_INVITES", "50/3600")
RATE_LIMIT_UPLOADS = env_str("RATE_LIMIT_UPLOADS", "30/60")
# Invite links made per user (pages and API together).
RATE_LIMIT_INVITE_LINKS = env_str("RATE_LIMIT_INVITE_LINKS", "20/3600")
# Message searches per user: each costs the database tens of milliseconds at most, so far more than a page.
RATE_LIMIT_SEARCHES = env_str("RATE_LIMIT_SEARCHES", "60/60")

# Metrics and profiling (perf.metrics, perf.exporter; docs/MONITORING.md)
# Prometheus metrics: django-prometheus and the project's own. Served by the
# exporter (`manage.py serve_metrics`, started by scripts/serve.sh) on
# METRICS_BIND:METRICS_PORT, never on the public site.
ENABLE_METRICS = env_bool("ENABLE_METRICS", True)
METRICS_PORT = env_int("METRICS_PORT", 9090)
METRICS_BIND = env_str("METRICS_BIND", "127.0.0.1")
# prometheus_client's multiprocess directory, shared by every server process
# and the exporter. prometheus_client reads the variable itself when it is
# imported, so it must be in the process environment from the start
# (scripts/serve.sh sets and wipes it); empty means one registry per process.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
# One line per request on the "perf.request" logger (JSON).
ENABLE_REQUEST_LOG = env_bool("ENABLE_REQUEST_LOG", True)
# django-silk: percent of requests recorded and profiled. 0 leaves silk's
# middleware out entirely (the UI at /silk/ stays, for staff); `make run` sets 100.
SILKY_INTERCEPT_PERCENT = env_float("SILKY_INTERCEPT_PERCENT", 0.0)
# Requests silk keeps; `manage.py silk_gc` deletes older ones.
SILKY_MAX_RECORDED_REQUESTS = env_int("SILKY_MAX_RECORDED_REQUESTS", 10_000)
