"""Serve the Prometheus metrics of every server process on METRICS_BIND:METRICS_PORT."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatsite import env
from perf import exporter


class Command(BaseCommand):
    help = (
        "Serve the metrics of all server processes (prometheus_client multiprocess mode, "
        "PROMETHEUS_MULTIPROC_DIR) for Prometheus to scrape. scripts/serve.sh starts it."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=None, help="default: METRICS_PORT")
        parser.add_argument("--bind", default=None, help="default: METRICS_BIND")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.METRICS_ENABLED:
            raise CommandError("Metrics are off (ENABLE_METRICS=false): nothing to serve.")
        path = env.PROMETHEUS_MULTIPROC_DIR
        if not path:
            raise CommandError(
                "PROMETHEUS_MULTIPROC_DIR is not set: each server process would keep its metrics to itself. "
                "Set it (to the same directory) for the servers and for this command; scripts/serve.sh does."
            )
        bind = options["bind"] or settings.METRICS_BIND
        port = options["port"] if options["port"] is not None else settings.METRICS_PORT
        server = exporter.make_server(bind, port, path)
        host, real_port = server.server_address[:2]
        self.stdout.write(f"Serving metrics of {path} on http://{host}:{real_port}/metrics", ending="\n")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
