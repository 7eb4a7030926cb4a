"""`manage.py seed_demo`: the demo users, project, rooms and conversation (idempotent; see chat.demo).

The large data set for load tests comes from ``python -m bench.seed``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from chat import demo
from chatsite import env


class Command(BaseCommand):
    help = "Create the demo users, project, rooms and messages (nothing that already exists)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = demo.demo_seed()
        self.stdout.write(result.summary())
        port = env.PORT
        password = settings.DEMO_PASSWORD
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Open http://127.0.0.1:{port}/"))
        self.stdout.write(f"Log in as alice, bob or carol (password: {password}).")
        self.stdout.write(f"Admin: http://127.0.0.1:{port}/admin/ as admin (password: {password}).")

