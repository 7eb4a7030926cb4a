"""Fill the cache for the most recently active rooms once (chat.warming.cache_warm)."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.management import BaseCommand, CommandError

from chat.warming import cache_warm, report_dict, shared_cache
from perf import cache as perf_cache


class Command(BaseCommand):
    help = (
        "Fill the cache with the history, rooms and unread tails of the rooms with the newest messages "
        "(what their first readers would otherwise read from the database). The background worker does "
        "this by itself; this runs it now, for example after a deploy."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--rooms", type=int, default=settings.CHAT_CACHE_WARM_ROOMS,
            help="how many rooms, most recently active first (default: CACHE_WARM_ROOMS)",
        )  # fmt: skip
        parser.add_argument(
            "--pages", type=int, default=settings.CHAT_CACHE_WARM_PAGES,
            help="history pages per room, newest first (default: CACHE_WARM_PAGES)",
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rooms"] < 0 or options["pages"] < 0:
            raise CommandError("--rooms and --pages must be 0 or more")
        if not perf_cache.caching_enabled():
            raise CommandError("caching is off (ENABLE_CACHING=false): there is nothing to warm")
        if not shared_cache():
            self.stderr.write("the cache is local to this process: warming it here helps no server")
        report = cache_warm(rooms=options["rooms"], pages=options["pages"])
        if options["json"]:
            self.stdout.write(orjson.dumps(report_dict(report)).decode())
        else:
            self.stdout.write(f"cache warmed: {report.summary()}")
