"""`manage.py seed_demo [--users N --projects P --rooms R --messages M]`

Without sizes: the demo users, project, rooms and conversation (idempotent).
With sizes: the demo data plus a bulk-loaded data set of that size on top
(see chat.seeding). Running it again with the same sizes does nothing.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat import seeding
from chatsite import env


class Command(BaseCommand):
    help = "Create demo users, project, rooms and messages; with sizes, also a large load data set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=0, help="load users (loadNNNNN) to have in total")
        parser.add_argument("--projects", type=int, default=0, help="load projects to have in total")
        parser.add_argument("--rooms", type=int, default=0, help="load rooms to have in total")
        parser.add_argument("--messages", type=int, default=0, help="load messages to have in total")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        sizes = {name: options[name] for name in ("users", "projects", "rooms", "messages")}
        for name, value in sizes.items():
            if value < 0:
                raise CommandError(f"--{name} must not be negative.")

        if any(sizes.values()):
            try:
                load = seeding.load_seed(**sizes, progress=not options["no_progress"], log=self.stdout.write)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            for note in load.notes:
                self.stdout.write(note)
            if load.changed:
                line = (
                    f"Load data: +{load.users} users, +{load.projects} projects, +{load.memberships} memberships, "
                    f"+{load.rooms} rooms, +{load.room_members} room members, +{load.messages} messages, "
                    f"{load.read_markers} read markers."
                )
                if load.messages and load.seconds_messages > 0:
                    rate = load.messages / load.seconds_messages
                    line += f" Message rows: {load.seconds_messages:.1f} s, {rate:,.0f} rows/s."
                self.stdout.write(line)
                self.stdout.write("Phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in load.seconds.items()))

        # After the load data: the demo conversation is written "now", the load
        # messages are back-dated, and created_at should increase with id.
        demo = seeding.demo_seed()
        if demo.changed:
            self.stdout.write(
                f"Demo data created: users {', '.join(demo.created_users) or '-'}; "
                f"project {'demo' if demo.created_project else '(existed)'}; "
                f"{demo.created_messages} messages."
            )
        else:
            self.stdout.write("Demo data already seeded.")

        port = env.PORT
        password = settings.DEMO_PASSWORD
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Open http://127.0.0.1:{port}/"))
        self.stdout.write(f"Log in as alice, bob or carol (password: {password}).")
        self.stdout.write(f"Admin: http://127.0.0.1:{port}/admin/ as admin (password: {password}).")
