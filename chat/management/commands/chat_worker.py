"""Run the background worker on this deployment's channel (see chat.background), and the cache warmer."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import BaseCommand, call_command

from chat.digests import DigestSender
from chat.warming import CacheWarmer


class Command(BaseCommand):
    help = (
        "Run the chat background worker (runworker on settings.CHAT_BACKGROUND_CHANNEL) "
        "and, with a shared cache, the cache warmer (chat.warming), and the digest e-mails (chat.digests)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"background worker on channel {settings.CHAT_BACKGROUND_CHANNEL}")
        warmer = CacheWarmer.from_settings()
        if warmer is not None:
            self.stdout.write(
                f"cache warmer: {warmer.rooms} rooms, {warmer.pages} history pages each, every {warmer.every:g} s"
                " or when the cache was emptied"
                f" (checked every {warmer.check:g} s)"
            )
            self.stdout.flush()
            warmer.start()
        digests = DigestSender.from_settings()
        if digests is not None:
            self.stdout.write(f"digest e-mails checked every {digests.every:g} s")
            digests.start()
        try:
            call_command("runworker", settings.CHAT_BACKGROUND_CHANNEL)
        finally:
            if warmer is not None:
                warmer.stop()
            if digests is not None:
                digests.stop()
