"""`make test`: the real PostgreSQL and Redis (defaults: the local services)."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chat")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")

from .base import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests that are not about rate limits send bursts; those that are set their own.
RATE_LIMITS = {name: "100000/60" for name in RATE_LIMITS}  # noqa: F405
