"""Bearer tokens for load-test users, made before the load test starts.

    python -m bench.make_tokens --users 5000 --out var/loadtest/tokens.json

Takes N load users (``load00001``, ``load00002``, …, made by
``python -m bench.seed --users N --projects P --rooms R --messages M``) that
can read at least one room, issues
each a fresh API token through ``chat.services.accounts.token_create`` and writes, per
user, the token and the rooms the user may read, grouped by project. The
locustfile (loadtest/locustfile.py) reads that file, so no password is hashed
and no token is issued while the load runs.

Tokens from an earlier run (same token name) are deleted first: only hashes
are stored, so old tokens cannot be written out again anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

TOKEN_NAME = "loadtest"


def load_user_tokens(*, count: int, name: str = TOKEN_NAME) -> dict[str, Any]:
    """Issue tokens for ``count`` load users; return the token file's content.

    Users are taken in name order; those who can read no room (members of a
    project whose rooms are all private ones they are not in) are skipped,
    since they could not do what a chat user does, so up to twice ``count``
    users are looked at. Side effects: deletes those users' earlier tokens
    named ``name`` and creates one new token each, in one transaction.
    """
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from bench import seeding
    from chat.services import accounts as account_services
    from chat.models import ApiToken, Room, RoomMember
    from projects.models import Membership

    User = get_user_model()
    wanted = [seeding.load_username(i) for i in range(1, 2 * count + 1)]
    users = list(User.objects.filter(username__in=wanted, is_active=True).order_by("username"))
    user_ids = [u.id for u in users]

    projects_of: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for user_id, project_id, slug in (
        Membership.objects.filter(user_id__in=user_ids, project__archived=False)
        .order_by("user_id", "project_id")
        .values_list("user_id", "project_id", "project__slug")
    ):
        projects_of[user_id].append((project_id, slug))
    project_ids = {p for pairs in projects_of.values() for p, _ in pairs}
    public: dict[int, list[int]] = defaultdict(list)
    private: dict[int, set[int]] = defaultdict(set)  # room id -> member user ids
    private_project: dict[int, int] = {}
    for room_id, project_id, is_private in (
        Room.objects.filter(project_id__in=project_ids).order_by("id").values_list("id", "project_id", "is_private")
    ):
        if is_private:
            private_project[room_id] = project_id
        else:
            public[project_id].append(room_id)
    for room_id, user_id in RoomMember.objects.filter(
        room_id__in=list(private_project), user_id__in=user_ids
    ).values_list("room_id", "user_id"):
        private[user_id].add(room_id)

    entries = []
    with transaction.atomic():
        ApiToken.objects.filter(user_id__in=user_ids, name=name).delete()
        for user in users:
            if len(entries) == count:
                break
            projects = []
            for project_id, slug in projects_of.get(user.id, []):
                mine = sorted(r for r in private[user.id] if private_project[r] == project_id)
                rooms = public[project_id] + mine
                if rooms:
                    projects.append({"slug": slug, "rooms": rooms})
            if not projects:
                continue
            _, raw = account_services.token_create(user=user, name=name)
            entries.append({"username": user.username, "token": raw, "projects": projects})
    return {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token_name": name, "users": entries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.make_tokens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, required=True, help="how many load users get a token")
    parser.add_argument("--out", default="var/loadtest/tokens.json", help="where to write the token file")
    parser.add_argument("--name", default=TOKEN_NAME, help="token name (earlier tokens with it are deleted)")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings.dev")
    import django

    django.setup()
    import orjson

    started = time.perf_counter()
    content = load_user_tokens(count=args.users, name=args.name)
    made = len(content["users"])
    if made < args.users:
        print(
            f"Only {made} of {args.users} load users exist and can read a room. Seed more first, e.g.\n"
            f"  python -m bench.seed --users {args.users} --projects 20 --rooms 500 --messages 1000000",
            file=sys.stderr,
        )
        if made == 0:
            return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(content))
    os.chmod(out, 0o600)  # bearer tokens
    print(f"{made} tokens written to {out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
