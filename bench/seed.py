"""The load data set for benchmarks and load tests, with the demo data on top.

    python -m bench.seed --users 10000 --projects 20 --rooms 500 --messages 1000000

Brings the bulk-loaded data set (bench/seeding.py) up to the given sizes, then
runs the demo seed (``manage.py seed_demo``, chat.demo) so the demo logins work
on the same database. Running it again with the same sizes does nothing; larger
sizes extend an earlier data set. Uses DATABASE_URL like manage.py (PostgreSQL:
COPY; the SQLite fallback: ``bulk_create`` in batches).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import setup_django

SIZES = ("users", "projects", "rooms", "messages")


def seed(*, users: int, projects: int = 0, rooms: int = 0, messages: int = 0, progress: bool = True,
         write: Callable[[str], None] = print) -> None:  # fmt: skip
    """Load data of the given sizes, then the demo data; ``write`` gets the progress lines.

    Raises ValueError when a level is asked for without the one below it
    (rooms without projects, …).
    """
    from bench import seeding
    from chat.demo import demo_seed

    load = seeding.load_seed(users=users, projects=projects, rooms=rooms, messages=messages, progress=progress, log=write)
    for note in load.notes:
        write(note)
    if load.changed:
        line = (
            f"Load data: +{load.users} users, +{load.projects} projects, +{load.memberships} memberships, "
            f"+{load.rooms} rooms, +{load.room_members} room members, +{load.messages} messages, "
            f"{load.read_markers} read markers."
        )
        if load.messages and load.seconds_messages > 0:
            rate = load.messages / load.seconds_messages
            line += f" Message rows: {load.seconds_messages:.1f} s, {rate:,.0f} rows/s."
        write(line)
        write("Phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in load.seconds.items()))
    # After the load data: the demo conversation is written "now", the load
    # messages are back-dated, and created_at should increase with id.
    write(demo_seed().summary())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=0, help="load users (loadNNNNN) to have in total")
    p.add_argument("--projects", type=int, default=0, help="load projects to have in total")
    p.add_argument("--rooms", type=int, default=0, help="load rooms to have in total")
    p.add_argument("--messages", type=int, default=0, help="load messages to have in total")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    sizes = {name: getattr(args, name) for name in SIZES}
    for name, value in sizes.items():
        if value < 0:
            p.error(f"--{name} must not be negative.")
    if not any(sizes.values()):
        p.error("give the sizes of the data set: --users, and --projects, --rooms, --messages as wanted.")
    setup_django()
    try:
        seed(**sizes, progress=not args.no_progress)
    except ValueError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
