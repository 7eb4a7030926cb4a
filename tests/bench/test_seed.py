"""python -m bench.seed: the bulk-loaded data set for benchmarks and load tests, with the demo data on top."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Exists, Max, OuterRef

from bench import seed as seed_cli
from chat.models import Message, ReadMarker, Room, RoomMember
from chat.services import messages as message_services
from projects.models import Membership, Project
from tests.servers import ROOT, server_env

User = get_user_model()

SIZES = {"users": 50, "projects": 3, "rooms": 10, "messages": 2000}


def seed(**sizes) -> str:
    lines: list[str] = []
    seed_cli.seed(**sizes, progress=False, write=lines.append)
    return "\n".join(lines)


def table_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count() for model in (User, Project, Membership, Room, RoomMember, Message)
    }


def load_rooms():
    return Room.objects.filter(project__slug__startswith="load-", slug__startswith="load-room-")


def test_sized_seed_creates_exactly_the_requested_counts(db):
    out = seed(**SIZES)

    assert User.objects.filter(username__regex=r"^load[0-9]{5}$").count() == 50
    assert Project.objects.filter(slug__regex=r"^load-[0-9]{3}$").count() == 3
    assert load_rooms().count() == 10
    assert Message.objects.filter(room__in=load_rooms()).count() == 2000
    assert "2000 messages" in out
    # The demo data comes with it.
    assert Project.objects.filter(slug="demo").exists()
    # One password hash, computed once, shared by every load user.
    hashes = set(User.objects.filter(username__startswith="load").values_list("password", flat=True))
    assert len(hashes) == 1
    assert User.objects.get(username="load00001").check_password(settings.DEMO_PASSWORD)


def test_sized_seed_keeps_the_message_invariants(db):
    seed(**SIZES)
    rooms = list(load_rooms())
    assert any(room.is_private for room in rooms)

    for room in rooms:
        seqs = list(Message.objects.filter(room=room).order_by("id").values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1)), room.slug
        assert room.last_message_seq == len(seqs)
        last = Message.objects.filter(room=room).aggregate(last=Max("created_at"))["last"]
        assert room.last_message_at == last

    messages = Message.objects.filter(room__in=rooms)
    # Several rooms and authors, and bodies of very different lengths.
    assert messages.values("room").distinct().count() >= 5
    assert messages.values("author").distinct().count() >= 10
    body_lengths = sorted(len(b) for b in messages.values_list("body", flat=True))
    assert body_lengths[0] < 60 and body_lengths[-1] > 500

    # created_at increases with id.
    times = list(messages.order_by("id").values_list("created_at", flat=True))
    assert all(a < b for a, b in zip(times, times[1:]))

    member = Membership.objects.filter(project=OuterRef("room__project"), user=OuterRef("author"))
    assert messages.exclude(Exists(member)).count() == 0
    in_room = RoomMember.objects.filter(room=OuterRef("room"), user=OuterRef("author"))
    private = messages.filter(room__is_private=True)
    assert private.exists()
    assert private.exclude(Exists(in_room)).count() == 0


def test_sized_seed_sets_read_markers_inside_each_room(db):
    seed(**SIZES)
    markers = ReadMarker.objects.filter(room__in=load_rooms(), last_read_message_id__gt=0)
    assert markers.count() > 10
    for member in markers:
        assert Message.objects.filter(room_id=member.room_id, id=member.last_read_message_id).exists()
    # Realistic unread counts: some readers are behind the newest message.
    behind = [
        m for m in markers.select_related("room")
        if Message.objects.filter(room=m.room, id__gt=m.last_read_message_id).exists()
    ]
    assert behind


def test_services_continue_a_seeded_room(db):
    seed(**SIZES)
    room = load_rooms().filter(last_message_seq__gt=0).select_related("project").first()
    author = User.objects.get(pk=Message.objects.filter(room=room).values_list("author", flat=True).first())
    message, created = message_services.message_create(room=room, author=author, body="after the load")
    assert created
    assert message.seq == room.last_message_seq + 1
    assert message.id > Message.objects.filter(room=room).exclude(pk=message.pk).aggregate(m=Max("id"))["m"]
    room.refresh_from_db()
    assert room.last_message_seq == message.seq


def test_sized_seed_again_does_nothing(db):
    seed(**SIZES)
    before = table_counts()
    out = seed(**SIZES)
    assert "already seeded" in out
    assert table_counts() == before


def test_sized_seed_grows_an_earlier_data_set(db):
    seed(users=20, projects=2, rooms=4)  # an earlier run without messages
    seed(**SIZES)
    assert Message.objects.filter(room__in=load_rooms()).count() == 2000
    seed(**{**SIZES, "messages": 2500})
    assert Message.objects.filter(room__in=load_rooms()).count() == 2500
    for room in load_rooms():
        seqs = list(Message.objects.filter(room=room).order_by("id").values_list("seq", flat=True))
        assert seqs == list(range(1, room.last_message_seq + 1))


def test_sized_seed_needs_the_levels_below(db):
    with pytest.raises(ValueError, match="--rooms"):
        seed(users=10, projects=1, messages=10)
    assert not User.objects.filter(username__startswith="load").exists()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.seed", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["--users", "10", "--projects", "1", "--messages", "10"], "--rooms"),
        (["--users", "-1"], "--users must not be negative"),
        ([], "--users"),
    ],
)
def test_the_command_refuses_sizes_it_cannot_load(args, says):
    done = _cli(*args, env=server_env())
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


@pytest.mark.embedded
def test_sized_seed_on_the_embedded_sqlite_database(tmp_path: Path):
    """The SQLite fallback (bulk_create in batches) keeps the same invariants."""
    db_path = tmp_path / "seed.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="chatsite.settings.dev", SQLITE_PATH=str(db_path), DEBUG="0")

    def run(*args: str, module: list[str]) -> str:
        done = subprocess.run(
            [sys.executable, *module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("migrate", "--no-input", "-v0", module=["manage.py"])
    sizes = ["--users", "20", "--projects", "2", "--rooms", "5", "--messages", "700"]
    run(*sizes, "--no-progress", module=["-m", "bench.seed"])
    again = run(*sizes, module=["-m", "bench.seed"])
    assert "already seeded" in again

    con = sqlite3.connect(db_path)
    try:
        total = con.execute(
            "SELECT COUNT(*) FROM chat_message m JOIN chat_room r ON r.id = m.room_id WHERE r.slug LIKE 'load-room-%'"
        ).fetchone()[0]
        assert total == 700
        bad = con.execute(
            "SELECT COUNT(*) FROM chat_room r WHERE r.last_message_seq != "
            "(SELECT COUNT(*) FROM chat_message m WHERE m.room_id = r.id) OR r.last_message_seq != "
            "(SELECT COALESCE(MAX(seq), 0) FROM chat_message m WHERE m.room_id = r.id)"
        ).fetchone()[0]
        assert bad == 0
        demo_users = con.execute("SELECT COUNT(*) FROM auth_user WHERE username IN ('alice', 'bob', 'carol', 'admin')").fetchone()[0]
        assert demo_users == 4
    finally:
        con.close()
