"""Benchmark fixtures in the database: one project, N public rooms, users with bearer tokens; messages for a
reaction storm, and the reactions they ended with.

Runs in the coordinator process with Django set up. Users, rooms and the
project are reused between runs (looked up by name); tokens are issued fresh
each run because only their hashes are stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction

from chat.models import ApiToken, Reaction, Room
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from projects import services as project_services
from projects.models import Membership, Project

PROJECT_SLUG = "ws-bench"
OWNER = "ws-bench-owner"
TOKEN_NAME = "ws-bench"
USER_PREFIX = "ws-bench-"


@dataclass
class Fixture:
    room_ids: list[int]
    tokens: list[str]  # bearer token of user i


def _owner() -> object:
    User = get_user_model()
    owner = User.objects.filter(username=OWNER).first()
    if owner is None:
        owner = User.objects.create(username=OWNER, password=make_password(None))
    return owner


def _project(owner: object) -> Project:
    project = Project.objects.filter(slug=PROJECT_SLUG).first()
    if project is None:
        project = project_services.project_create(user=owner, name="WebSocket benchmark", slug=PROJECT_SLUG)
    return project


def _rooms(project: Project, owner: object, count: int) -> list[int]:
    slugs = [f"bench-{i:04d}" for i in range(count)]
    existing = dict(Room.objects.filter(project=project, slug__in=slugs).values_list("slug", "id"))
    for slug in slugs:
        if slug not in existing:
            existing[slug] = room_services.room_create(project=project, user=owner, name=slug, slug=slug).id
    return [existing[slug] for slug in slugs]


def _users(project: Project, count: int) -> list[object]:
    User = get_user_model()
    names = [f"{USER_PREFIX}{i:05d}" for i in range(count)]
    found = {u.username: u for u in User.objects.filter(username__in=names)}
    missing = [name for name in names if name not in found]
    if missing:
        # Load-test accounts that never log in with a password: an unusable
        # password skips the deliberately slow hasher for thousands of rows.
        unusable = make_password(None)
        User.objects.bulk_create([User(username=name, password=unusable) for name in missing], batch_size=1000)
        found.update({u.username: u for u in User.objects.filter(username__in=missing)})
    users = [found[name] for name in names]
    Membership.objects.bulk_create(
        [Membership(project=project, user=u, role=Membership.Role.MEMBER) for u in users],
        batch_size=1000,
        ignore_conflicts=True,
    )
    return users


def prepare(*, rooms: int, users: int) -> Fixture:
    """``rooms`` public rooms in the benchmark project and ``users`` members with fresh tokens."""
    owner = _owner()
    project = _project(owner)
    room_ids = _rooms(project, owner, rooms)
    members = _users(project, users)
    with transaction.atomic():
        ApiToken.objects.filter(user__username__startswith=USER_PREFIX, name=TOKEN_NAME).delete()
        tokens = [account_services.token_create(user=u, name=TOKEN_NAME)[1] for u in members]
    return Fixture(room_ids=room_ids, tokens=tokens)


def reaction_targets(*, room_ids: list[int], count: int, label: str) -> list[tuple[int, int]]:
    """Post ``count`` fresh messages for a reaction storm, round-robin over ``room_ids``: (room id, message id) each.

    Fresh, so each storm starts from no reactions; posted by the project's owner through the one message writer."""
    owner = _owner()
    rooms = {room.id: room for room in Room.objects.filter(id__in=room_ids)}
    targets = []
    for i in range(count):
        room = rooms[room_ids[i % len(room_ids)]]
        message, _ = message_services.message_create(room=room, author=owner, body=f"React to this ({label}, {i + 1}/{count})")
        targets.append((room.id, message.id))
    return targets


def reaction_state(*, message_ids: list[int]) -> dict[int, dict[str, tuple[int, tuple[int, ...]]]]:
    """What the database holds: message id -> emoji -> (count, user ids ascending), read from the rows themselves
    (not through the selector the server's summaries come from)."""
    state: dict[int, dict[str, list[int]]] = {message_id: {} for message_id in message_ids}
    for message_id, emoji, user_id in Reaction.objects.filter(message_id__in=message_ids).values_list("message_id", "emoji", "user_id"):
        state[message_id].setdefault(emoji, []).append(user_id)
    return {
        message_id: {emoji: (len(users), tuple(sorted(users))) for emoji, users in emojis.items()}
        for message_id, emojis in state.items()
    }
