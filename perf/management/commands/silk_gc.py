"""Trim django-silk's recorded requests to SILKY_MAX_RECORDED_REQUESTS, outside the request path."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

BATCH = 500


class Command(BaseCommand):
    help = (
        "Delete the oldest requests silk recorded (with their queries, profiles and responses) so at most "
        "SILKY_MAX_RECORDED_REQUESTS remain. Silk's own in-request trimming is off "
        "(SILKY_MAX_RECORDED_REQUESTS_CHECK_PERCENT = 0); run this from cron or a timer instead."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--max", type=int, default=None, help="requests to keep (default: SILKY_MAX_RECORDED_REQUESTS)")

    def handle(self, *args: Any, **options: Any) -> None:
        from silk.models import Request

        keep = settings.SILKY_MAX_RECORDED_REQUESTS if options["max"] is None else options["max"]
        if keep < 0:
            raise CommandError("--max must be 0 or more.")
        before = Request.objects.count()
        deleted = 0
        if before > keep:
            # The start time of the newest request that goes: it and everything older is deleted.
            cutoff = Request.objects.order_by("-start_time").values_list("start_time", flat=True)[keep]
            while True:
                # In batches: the cascade loads each request's queries and profiles.
                ids = list(
                    Request.objects.filter(start_time__lte=cutoff).order_by("start_time").values_list("id", flat=True)[:BATCH]
                )
                if not ids:
                    break
                with transaction.atomic():
                    Request.objects.filter(id__in=ids).delete()
                deleted += len(ids)
        self.stdout.write(f"silk: {before} recorded requests, {deleted} deleted, {before - deleted} kept (max {keep}).")
