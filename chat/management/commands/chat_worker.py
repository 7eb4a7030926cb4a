"""Run the background worker on this deployment's channel (see chat.background)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import BaseCommand, call_command


class Command(BaseCommand):
    help = "Run the chat background worker (runworker on settings.CHAT_BACKGROUND_CHANNEL)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"background worker on channel {settings.CHAT_BACKGROUND_CHANNEL}")
        call_command("runworker", settings.CHAT_BACKGROUND_CHANNEL)
