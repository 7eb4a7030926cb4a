"""Benchmarks and the load data set they measure on.

No app imports anything here: a server runs bench code only when a benchmark
starts it on bench.reference_asgi.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def service_urls() -> tuple[str, str] | None:
    """DATABASE_URL and REDIS_URL from the environment, or None (after saying why) if either is unusable."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith("postgres") or not redis_url.startswith("redis"):
        print("Set DATABASE_URL (PostgreSQL) and REDIS_URL: the benchmark needs the real services.", file=sys.stderr)
        return None
    return database_url, redis_url


def setup_django(default_settings: str = "chatsite.settings.dev") -> None:
    """Set Django up for a benchmark script run as ``python -m bench.<name>`` (settings as manage.py has them)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", default_settings)
    import django

    django.setup()
