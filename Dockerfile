# The chat server image: uvicorn serving chatsite.asgi (HTTP and WebSocket).
#
#   docker build -t teamchat .
#   docker compose up --build        (web, migrate, postgres, redis; see docker-compose.yml)
#
# Configuration comes from the environment at run time (chatsite/env.py lists
# every variable); nothing secret is baked into the image.

# --- Stage 1: dependencies in a virtualenv ---------------------------------
FROM python:3.11-slim AS deps

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

# Only the requirements, so code changes reuse this layer.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

# --- Stage 2: the runtime image --------------------------------------------
FROM python:3.11-slim

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=chatsite.settings.production

RUN groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --home-dir /app --no-create-home --shell /usr/sbin/nologin chat

WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
# Code and collected static files stay owned by root: the server cannot modify itself.
COPY . /app

# Production settings refuse to load without these; the values here exist only
# for this one command (nothing connects to them) and are not kept in the image.
RUN SECRET_KEY=build-only-collectstatic \
    DATABASE_URL=postgres://build@127.0.0.1:5432/build \
    REDIS_URL=redis://127.0.0.1:6379/0 \
    python manage.py collectstatic --no-input --verbosity 0

# Shared files (FILE_STORAGE=local): the one place the server writes, a volume
# that web and the worker (thumbnails) share.
RUN mkdir -p /data/media && chown 10001:10001 /data/media
ENV MEDIA_ROOT=/data/media

USER 10001:10001

EXPOSE 8000

# /healthz answers 200 when PostgreSQL and Redis answer. The production
# settings exempt it from SECURE_SSL_REDIRECT, so plain HTTP from inside the
# container gets the answer rather than a 301.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; r = u.urlopen('http://127.0.0.1:8000/healthz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# scripts/serve.sh: uvicorn (through chatsite.server: heartbeats, 1 MiB messages,
# 1009 close frames; ASGI_SERVER=daphne for daphne) plus the metrics exporter, and the
# background worker unless SERVE_WORKER=false (compose runs it separately).
ENV PY=python \
    HOST=0.0.0.0 \
    PORT=8000
CMD ["scripts/serve.sh"]
