"""Run one request through the whole Django stack under cProfile and print the top functions."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

SORTS = ("cumulative", "tottime", "calls", "ncalls")


def _host() -> str:
    """A host the site accepts (test client requests must pass ALLOWED_HOSTS)."""
    for host in settings.ALLOWED_HOSTS:
        if host and host != "*" and not host.startswith("."):
            return host.strip("[]") if host.startswith("[") else host
    return "testserver"


class Command(BaseCommand):
    help = (
        "Profile one request: python manage.py profile_url /api/v1/projects --user alice. "
        "Runs it once unprofiled (connections, caches, imports), then under cProfile; prints the "
        "status, time, queries and the top functions."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", help="path and query string, e.g. /api/v1/rooms/1/messages?limit=50")
        parser.add_argument("--user", help="username to log in as (session); anonymous without")
        parser.add_argument("--method", default="GET")
        parser.add_argument("--data", default="", help="request body (sent as application/json)")
        parser.add_argument("--sort", default="cumulative", choices=SORTS)
        parser.add_argument("--limit", type=int, default=25, help="rows of the profile to print")
        parser.add_argument("--warmup", type=int, default=1, help="unprofiled requests first")
        parser.add_argument("--output", help="also write the raw profile here (for snakeviz, gprof2dot)")

    def handle(self, *args: Any, **options: Any) -> None:
        client = Client(raise_request_exception=False, HTTP_HOST=_host())
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user named {options['user']!r}.")
            client.force_login(user)

        def send() -> Any:
            return client.generic(
                options["method"].upper(),
                options["path"],
                options["data"].encode(),
                content_type="application/json",
                secure=bool(getattr(settings, "SECURE_SSL_REDIRECT", False)),
            )

        for _ in range(max(0, options["warmup"])):
            send()
        profiler = cProfile.Profile()
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            profiler.enable()
            response = send()
            profiler.disable()
            elapsed = time.perf_counter() - start

        self.stdout.write(
            f"{options['method'].upper()} {options['path']} -> {response.status_code}, "
            f"{elapsed * 1000:.1f} ms under the profiler, {len(queries)} queries, "
            f"{len(getattr(response, 'content', b''))} bytes"
        )
        if options["output"]:
            profiler.dump_stats(options["output"])
            self.stdout.write(f"Profile written to {options['output']}")
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        stats.strip_dirs().sort_stats(options["sort"]).print_stats(options["limit"])
        self.stdout.write(buffer.getvalue().rstrip())
