"""manage.py seed_demo: the demo data set `make run` serves."""

from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from chat import demo
from chat.models import Message, Room, RoomMember
from chat.services import messages as message_services
from projects.models import Membership, Project

User = get_user_model()


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def table_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count() for model in (User, Project, Membership, Room, RoomMember, Message)
    }


def test_demo_seed_creates_users_project_rooms_and_history(db, monkeypatch):
    monkeypatch.delenv("PORT", raising=False)
    out = seed()

    users = {u.username: u for u in User.objects.filter(username__in=["alice", "bob", "carol", "admin"])}
    assert set(users) == {"alice", "bob", "carol", "admin"}
    for user in users.values():
        assert user.check_password(settings.DEMO_PASSWORD)
    assert users["alice"].get_full_name() == "Alice Archer"
    assert users["admin"].is_staff and users["admin"].is_superuser
    assert not users["bob"].is_staff

    project = Project.objects.get(slug="demo")
    assert project.name == "Demo"
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"alice": "owner", "bob": "member", "carol": "member"}

    rooms = {room.slug: room for room in Room.objects.filter(project=project)}
    assert set(rooms) == {"general", "random"}
    assert Message.objects.filter(room__project=project).count() == len(demo.DEMO_CONVERSATION) == 30
    for room in rooms.values():
        seqs = list(Message.objects.filter(room=room).order_by("id").values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1)) and room.last_message_seq == len(seqs) > 0

    assert "http://127.0.0.1:8000/" in out
    assert settings.DEMO_PASSWORD in out
    for username in ("alice", "bob", "carol", "admin"):
        assert username in out


def test_demo_seed_is_idempotent(db):
    seed()
    before = table_counts()
    out = seed()
    assert table_counts() == before
    assert "already seeded" in out


def test_demo_seed_prints_the_configured_port(db, monkeypatch):
    from chatsite import env

    monkeypatch.setattr(env, "PORT", 9123)  # what PORT=9123 in the environment gives
    assert "http://127.0.0.1:9123/" in seed()


def test_demo_seed_keeps_a_conversation_people_already_had(db):
    seed()
    room = Room.objects.select_related("project").get(project__slug="demo", slug="random")
    bob = User.objects.get(username="bob")
    message_services.message_create(room=room, author=bob, body="a message after seeding")
    before = table_counts()
    seed()
    assert table_counts() == before


def test_seed_demo_takes_no_sizes(db):
    """The load data set is the benchmarks' (python -m bench.seed), not the app's."""
    with pytest.raises(CommandError):
        call_command("seed_demo", "--users", "10")
