"""Send the digest e-mails that are due now (the worker does this every NOTIFY_DIGEST_CHECK seconds)."""

from __future__ import annotations

from typing import Any

from django.core.management import BaseCommand

from chat.services import notifications as notification_services


class Command(BaseCommand):
    help = "E-mail each user their mentions and direct messages still unread past NOTIFY_DIGEST_DELAY."

    def handle(self, *args: Any, **options: Any) -> None:
        sent = notification_services.digests_send()
        self.stdout.write(f"digests sent: {sent}")
