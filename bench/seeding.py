"""A large data set for benchmarks and load tests, written in bulk: ``python -m bench.seed``.

``load_seed(users=, projects=, rooms=, messages=)`` brings it up to the given
sizes: users ``loadNNNNN``, projects ``load-NNN``, rooms ``load-room-NNNN``,
messages and read markers. The services would take hours for a million
messages (one row lock and one round trip each), so this writes rows
directly, keeping the invariants the services keep:

* every message author is a member of the room's project, and of the room
  when it is private;
* ``seq`` is contiguous 1..k per room and ``room.last_message_seq`` /
  ``last_message_at`` describe the newest message;
* ``created_at`` increases with ``id`` (rows are written in time order, so
  the id sequence hands out ids in that order too).

Messages go in with COPY on PostgreSQL, ``bulk_create`` elsewhere. Each
phase only adds what is missing, so a second run with the same sizes does
nothing, and larger sizes extend an earlier data set.
"""

from __future__ import annotations

import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from chat.models import Message, ReadMarker, Room, RoomMember
from projects.models import Membership, Project

User = get_user_model()

Log = Callable[[str], None]

LOAD_USER_RE = re.compile(r"^load(\d{5,})$")
LOAD_PROJECT_RE = re.compile(r"^load-(\d{3,})$")
LOAD_ROOM_RE = re.compile(r"^load-room-(\d{4,})$")

BATCH = 5_000
PRIVATE_EVERY = 5  # every fifth room is private
PRIVATE_ROOM_SIZE = 12  # members of a private room besides its creator
SECOND_PROJECT_SHARE = 0.25  # users who belong to a second project
READER_SHARE = 0.3  # project members with read state in a public room
MESSAGE_SPACING = timedelta(seconds=30)  # average gap between two messages...
MESSAGE_SPAN_MAX = timedelta(days=365)  # ...unless that would go back more than a year

FIRST_NAMES = (
    "Ada Alan Amira Ana Arjun Bea Ben Carlos Chen Chloe Dana David Elena Emil Eva Farah Felix Grace Hana Hugo "
    "Ines Ivan Jack Jana Jonas Kai Kate Lars Lea Leo Lina Luca Maja Malik Maria Mateo Mia Nadia Nina Noah Olga "
    "Omar Paula Pavel Priya Quinn Rafael Rosa Sam Sara Sofia Tariq Tess Theo Uma Vera Wei Yara Yusuf Zoe"
).split()
LAST_NAMES = (
    "Abbott Adeyemi Berg Brandt Costa Dubois Eriksen Fischer Garcia Gupta Haddad Hansen Ito Jansen Kaur Kim "
    "Kowalski Larsen Lopez Martin Moreau Nakamura Novak Okafor Olsen Patel Petrov Quint Rossi Santos Schmidt "
    "Silva Smith Sousa Tanaka Torres Varga Wagner Weber Wong Yilmaz Zhang"
).split()
ROOM_TOPICS = (
    "backend frontend design ops releases support sales marketing hiring onboarding docs testing "
    "security data mobile infra billing search performance incidents standup planning research random"
).split()
_FRAGMENTS = (
    "sounds good",
    "I pushed a fix for that",
    "can you take a look when you have a minute?",
    "the build is green again",
    "let's discuss it at standup",
    "I think the cache is stale",
    "deployed to staging",
    "who owns this ticket?",
    "thanks!",
    "that query does a sequential scan",
    "I'll write a test that reproduces it",
    "the migration ran in under a second",
    "we should add an index on that column",
    "lunch anyone?",
    "the customer confirmed it works now",
    "I'm out tomorrow afternoon",
    "reverting, sorry about that",
    "here's the link to the design doc",
    "latency went down after the change",
    "can we ship this on Thursday?",
    "the flaky test is back",
    "let me check the logs",
    "nice work",
    "the websocket reconnects after a deploy",
    "I'd rather keep it simple for now",
    "merged",
    "the docs are out of date there",
    "I can pair on it after lunch",
    "what does the error say exactly?",
    "the numbers look much better than last week",
)


@dataclass
class LoadResult:
    users: int = 0
    projects: int = 0
    memberships: int = 0
    rooms: int = 0
    room_members: int = 0
    messages: int = 0
    read_markers: int = 0
    seconds_messages: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall time
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any((self.users, self.projects, self.memberships, self.rooms, self.room_members, self.messages))


def load_username(index: int) -> str:
    return f"load{index:05d}"


def load_project_slug(index: int) -> str:
    return f"load-{index:03d}"


def load_room_slug(index: int) -> str:
    return f"load-room-{index:04d}"


def _indexed(pairs: Any, pattern: re.Pattern[str]) -> dict[int, Any]:
    """Map the number in each matching name to its value; names that do not match are ignored."""
    found = {}
    for name, value in pairs:
        match = pattern.match(name)
        if match:
            found[int(match.group(1))] = value
    return found


def _load_user_ids() -> dict[int, int]:
    return _indexed(User.objects.filter(username__startswith="load").values_list("username", "id"), LOAD_USER_RE)


def _load_project_ids() -> dict[int, int]:
    return _indexed(Project.objects.filter(slug__startswith="load-").values_list("slug", "id"), LOAD_PROJECT_RE)


def _load_rooms(project_ids: list[int]) -> dict[int, Room]:
    rooms = Room.objects.filter(project_id__in=project_ids, slug__startswith="load-room-")
    return _indexed(((room.slug, room) for room in rooms), LOAD_ROOM_RE)


def load_counts() -> dict[str, int]:
    """How much load data exists: users, projects, rooms, messages (from the room counters)."""
    project_ids = list(_load_project_ids().values())
    rooms = _load_rooms(project_ids)
    return {
        "users": len(_load_user_ids()),
        "projects": len(project_ids),
        "rooms": len(rooms),
        "messages": sum(room.last_message_seq for room in rooms.values()),
    }


def load_seed(
    *, users: int, projects: int = 0, rooms: int = 0, messages: int = 0, progress: bool = True, log: Log = print
) -> LoadResult:
    """Bring the load data set up to the given sizes; see the module docstring.

    Users, projects, memberships and rooms are written in one transaction,
    messages with their room counters and read markers in a second one, so an
    interrupted run leaves either a whole phase or none of it. Afterwards the
    tables are analyzed (PostgreSQL) so the planner knows their new sizes.
    """
    if projects and not users:
        raise ValueError("Projects need users: pass --users too.")
    if rooms and not projects:
        raise ValueError("Rooms need projects: pass --projects too.")
    if messages and not rooms:
        raise ValueError("Messages need rooms: pass --rooms too.")

    result = LoadResult()
    before = load_counts()
    if (
        before["users"] >= users
        and before["projects"] >= projects
        and before["rooms"] >= rooms
        and before["messages"] >= messages
    ):
        result.notes.append(
            "Load data already seeded ({users} users, {projects} projects, {rooms} rooms, {messages} messages); "
            "nothing to do.".format(**before)
        )
        return result

    with _timed(result, "structure"), transaction.atomic():
        _load_structure(users=users, projects=projects, rooms=rooms, result=result, log=log)
    if messages:
        with _timed(result, "messages"), transaction.atomic():
            _load_messages(target=messages, result=result, progress=progress, log=log)
    with _timed(result, "analyze"):
        _analyze(log=log)
    return result


@contextmanager
def _timed(result: LoadResult, phase: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        result.seconds[phase] = time.perf_counter() - started


# --- Load: users, projects, memberships, rooms --------------------------------


def _load_structure(*, users: int, projects: int, rooms: int, result: LoadResult, log: Log) -> None:
    user_ids = _load_user_ids()
    missing = [i for i in range(1, users + 1) if i not in user_ids]
    if missing:
        log(f"Creating {len(missing)} users...")
        # Hashing is deliberately slow; every load user shares one password and so one hash.
        password = make_password(settings.DEMO_PASSWORD)
        now = timezone.now()
        new_users = [
            User(
                username=load_username(i),
                password=password,
                first_name=FIRST_NAMES[i % len(FIRST_NAMES)],
                last_name=LAST_NAMES[(i // len(FIRST_NAMES)) % len(LAST_NAMES)],
                email=f"{load_username(i)}@example.com",
                is_active=True,
                date_joined=now,
            )
            for i in missing
        ]
        User.objects.bulk_create(new_users, batch_size=BATCH, ignore_conflicts=True)
        user_ids = _load_user_ids()
        result.users = len(missing)
    if not projects:
        return

    project_ids = _load_project_ids()
    missing = [p for p in range(1, projects + 1) if p not in project_ids]
    if missing:
        log(f"Creating {len(missing)} projects...")
        Project.objects.bulk_create(
            [
                Project(
                    slug=load_project_slug(p),
                    name=f"Load Project {p:03d}",
                    description="Generated load data.",
                    created_by_id=user_ids[_owner_index(p, users)],
                )
                for p in missing
            ],
            batch_size=BATCH,
            ignore_conflicts=True,
        )
        project_ids = _load_project_ids()
        result.projects = len(missing)

    # Membership: every user has a home project; some a second one; each project an owner.
    roles: dict[tuple[int, int], str] = {}
    for i in range(1, users + 1):
        rng = random.Random(f"member:{i}")
        homes = {(i - 1) % projects + 1}
        if projects > 1 and rng.random() < SECOND_PROJECT_SHARE:
            homes.add(rng.randrange(projects) + 1)
        role = Membership.Role.ADMIN if rng.random() < 0.02 else Membership.Role.MEMBER
        for p in homes:
            roles[(p, i)] = role
    for p in range(1, projects + 1):
        roles[(p, _owner_index(p, users))] = Membership.Role.OWNER
    existing = set(
        Membership.objects.filter(project_id__in=project_ids.values()).values_list("project_id", "user_id")
    )
    new_memberships = [
        Membership(project_id=project_ids[p], user_id=user_ids[i], role=role)
        for (p, i), role in roles.items()
        if (project_ids[p], user_ids[i]) not in existing
    ]
    if new_memberships:
        log(f"Creating {len(new_memberships)} memberships...")
        Membership.objects.bulk_create(new_memberships, batch_size=BATCH, ignore_conflicts=True)
        result.memberships = len(new_memberships)
    if not rooms:
        return

    room_by_index = _load_rooms(list(project_ids.values()))
    missing = [j for j in range(1, rooms + 1) if j not in room_by_index]
    if missing:
        log(f"Creating {len(missing)} rooms...")
        Room.objects.bulk_create(
            [
                Room(
                    project_id=project_ids[_room_project_index(j, projects)],
                    slug=load_room_slug(j),
                    name=f"{ROOM_TOPICS[j % len(ROOM_TOPICS)]} {j}",
                    topic=f"Generated room {j}",
                    is_private=j % PRIVATE_EVERY == 0,
                    created_by_id=user_ids[_owner_index(_room_project_index(j, projects), users)],
                )
                for j in missing
            ],
            batch_size=BATCH,
            ignore_conflicts=True,
        )
        room_by_index = _load_rooms(list(project_ids.values()))
        result.rooms = len(missing)

    # Room members: every creator (room_create does the same), plus a private room's members.
    members_of = _project_members(list(project_ids.values()))
    wanted: set[tuple[int, int]] = set()
    for j in range(1, rooms + 1):
        room = room_by_index[j]
        if room.created_by_id:
            wanted.add((room.id, room.created_by_id))
        if room.is_private:
            candidates = sorted(members_of[room.project_id])
            rng = random.Random(f"private:{j}")
            for user_id in rng.sample(candidates, min(PRIVATE_ROOM_SIZE, len(candidates))):
                wanted.add((room.id, user_id))
    room_ids = [room.id for room in room_by_index.values()]
    existing = set(RoomMember.objects.filter(room_id__in=room_ids).values_list("room_id", "user_id"))
    new_members = [RoomMember(room_id=r, user_id=u) for r, u in sorted(wanted - existing)]
    if new_members:
        log(f"Creating {len(new_members)} private room members...")
        RoomMember.objects.bulk_create(new_members, batch_size=BATCH, ignore_conflicts=True)
        result.room_members = len(new_members)


def _owner_index(project_index: int, users: int) -> int:
    return (project_index - 1) % users + 1


def _room_project_index(room_index: int, projects: int) -> int:
    return (room_index - 1) % projects + 1


def _project_members(project_ids: list[int]) -> dict[int, set[int]]:
    members: dict[int, set[int]] = defaultdict(set)
    for project_id, user_id in Membership.objects.filter(project_id__in=project_ids).values_list(
        "project_id", "user_id"
    ):
        members[project_id].add(user_id)
    return members


# --- Load: messages, room counters, read markers ------------------------------


def _body_pool(size: int = 4096) -> list[str]:
    """Message bodies of varied length: mostly one line, some paragraphs, a few walls of text."""
    rng = random.Random("bodies")
    pool = []
    for _ in range(size):
        roll = rng.random()
        if roll < 0.6:
            parts = 1
        elif roll < 0.9:
            parts = rng.randint(2, 4)
        elif roll < 0.99:
            parts = rng.randint(5, 15)
        else:
            parts = rng.randint(40, 120)
        sentences = [rng.choice(_FRAGMENTS) for _ in range(parts)]
        text = ". ".join(s[0].upper() + s[1:] for s in sentences)
        if parts > 20:  # long ones get paragraphs
            words = text.split(". ")
            text = ".\n\n".join(". ".join(words[k : k + 8]) for k in range(0, len(words), 8))
        pool.append(text[: settings.CHAT_MESSAGE_MAX_LENGTH])
    return pool


@dataclass
class _RoomPlan:
    room: Room
    authors: list[int]  # chatty people first: picks are skewed to the front
    seq: int  # the room's newest seq so far
    last_at: datetime | None = None


def _load_messages(*, target: int, result: LoadResult, progress: bool, log: Log) -> None:
    project_ids = list(_load_project_ids().values())
    room_by_index = _load_rooms(project_ids)
    if not room_by_index:
        return
    room_ids = [room_by_index[j].id for j in sorted(room_by_index)]
    # Lock the rooms (and read their counters under the lock): a message_create
    # running meanwhile would race for the same seqs.
    locked = Room.objects.select_for_update().in_bulk(room_ids)
    rooms = [locked[room_id] for room_id in room_ids]
    stats = {
        row["room_id"]: row
        for row in Message.objects.filter(room_id__in=room_ids)
        .values("room_id")
        .annotate(max_seq=Max("seq"), n=Count("id"), last_at=Max("created_at"))
        .order_by()
    }
    existing = sum(row["n"] for row in stats.values())
    todo = target - existing
    if todo <= 0:
        result.notes.append(f"{existing} load messages already exist; no messages added.")
        return

    members_of = _project_members(project_ids)
    room_members: dict[int, set[int]] = defaultdict(set)
    for room_id, user_id in RoomMember.objects.filter(
        room_id__in=[r.id for r in rooms if r.is_private]
    ).values_list("room_id", "user_id"):
        room_members[room_id].add(user_id)

    plans: list[_RoomPlan] = []
    for room in rooms:
        authors = members_of[room.project_id]
        if room.is_private:
            authors = authors & room_members[room.id]
        if not authors:
            continue
        ordered = sorted(authors)
        random.Random(f"authors:{room.slug}").shuffle(ordered)
        row = stats.get(room.id, {})
        seq = max(row.get("max_seq") or 0, room.last_message_seq)
        plans.append(_RoomPlan(room=room, authors=ordered, seq=seq))
    if not plans:
        result.notes.append("No load room has members; no messages added.")
        return

    now = timezone.now()
    latest = max((row["last_at"] for row in stats.values() if row["last_at"]), default=None)
    start = now - min(MESSAGE_SPAN_MAX, MESSAGE_SPACING * todo)
    if latest is not None and latest >= start:
        start = latest + timedelta(microseconds=1)
    step_us = max(1, int((now - start) / timedelta(microseconds=1)) // todo)

    log(f"Creating {todo} messages in {len(plans)} rooms ({connection.vendor})...")
    rows = _message_rows(plans=plans, count=todo, start=start, step_us=step_us)
    started = time.perf_counter()
    bar = _progress(total=todo, enabled=progress)
    try:
        if connection.vendor == "postgresql":
            _copy_messages(rows, bar)
        else:
            _bulk_create_messages(rows, bar)
    finally:
        bar.close()
    result.seconds_messages = time.perf_counter() - started
    result.messages = todo

    touched = [plan for plan in plans if plan.last_at is not None]
    for plan in touched:
        plan.room.last_message_seq = plan.seq
        plan.room.last_message_at = plan.last_at
    Room.objects.bulk_update([plan.room for plan in touched], ["last_message_seq", "last_message_at"], batch_size=500)

    result.read_markers = _load_read_markers(plans=plans, members_of=members_of, log=log)


def _message_rows(*, plans: list[_RoomPlan], count: int, start: datetime, step_us: int) -> Iterator[tuple]:
    """``count`` rows (room_id, author_id, seq, body, created_at, edited_at, deleted_at) in time order.

    Busy rooms get many more messages than quiet ones (Zipf-like weights);
    within a room a few people write most of them.
    """
    rng = random.Random("messages")
    bodies = _body_pool()
    order = list(range(len(plans)))
    rng.shuffle(order)
    weights = [0.0] * len(plans)
    for rank, k in enumerate(order, start=1):
        weights[k] = 1.0 / rank**0.8
    cum_weights = []
    total = 0.0
    for w in weights:
        total += w
        cum_weights.append(total)

    population = range(len(plans))
    random_ = rng.random
    getrandbits = rng.getrandbits
    mask = len(bodies) - 1
    one_us = timedelta(microseconds=1)
    chunk = 50_000
    i = 0
    while i < count:
        picks = rng.choices(population, cum_weights=cum_weights, k=min(chunk, count - i))
        for k in picks:
            plan = plans[k]
            plan.seq += 1
            authors = plan.authors
            created = start + one_us * (i * step_us + int(random_() * step_us))
            plan.last_at = created
            roll = random_()
            edited = created + timedelta(minutes=1 + int(roll * 1000)) if roll < 0.02 else None
            deleted = created + timedelta(minutes=5) if roll > 0.997 else None
            yield (
                plan.room.id,
                authors[int(len(authors) * random_() ** 2)],
                plan.seq,
                bodies[getrandbits(12) & mask],
                created,
                edited,
                deleted,
            )
            i += 1


_MESSAGE_COLUMNS = ("room_id", "author_id", "seq", "body", "created_at", "edited_at", "deleted_at")


def _copy_messages(rows: Iterator[tuple], bar: Any) -> None:
    """Stream rows into the message table with COPY (binary), in the current transaction."""
    qn = connection.ops.quote_name
    sql = "COPY {} ({}) FROM STDIN (FORMAT BINARY)".format(
        qn(Message._meta.db_table), ", ".join(qn(c) for c in _MESSAGE_COLUMNS)
    )
    with connection.cursor() as cursor:
        # Django's cursor wraps a psycopg 3 cursor, which has the COPY API.
        with cursor.cursor.copy(sql) as copy:
            # Binary COPY needs the exact column types (the user id may be int4 or int8).
            copy.set_types([_column(c).db_type(connection) for c in _MESSAGE_COLUMNS])
            n = 0
            for row in rows:
                copy.write_row(row)
                n += 1
                if n == 10_000:
                    bar.update(n)
                    n = 0
            bar.update(n)


def _column(name: str) -> Any:
    return next(f for f in Message._meta.concrete_fields if f.column == name)


def _bulk_create_messages(rows: Iterator[tuple], bar: Any) -> None:
    batch: list[Message] = []
    for room_id, author_id, seq, body, created, edited, deleted in rows:
        batch.append(
            Message(
                room_id=room_id,
                author_id=author_id,
                seq=seq,
                body=body,
                created_at=created,
                edited_at=edited,
                deleted_at=deleted,
            )
        )
        if len(batch) == BATCH:
            Message.objects.bulk_create(batch)
            bar.update(len(batch))
            batch = []
    if batch:
        Message.objects.bulk_create(batch)
        bar.update(len(batch))


def _load_read_markers(*, plans: list[_RoomPlan], members_of: dict[int, set[int]], log: Log) -> int:
    """Give a share of each room's readers a read marker a little behind the newest message.

    Half of them have read everything, the rest are a few to a few hundred
    messages behind, which makes unread counts look like a real team's.
    """
    rng = random.Random("readers")
    wanted: dict[int, dict[int, int]] = {}  # room id -> user id -> seq read up to
    for plan in plans:
        if plan.seq == 0:
            continue
        readers = plan.authors if plan.room.is_private else sorted(members_of[plan.room.project_id])
        chosen = readers if plan.room.is_private else [u for u in readers if rng.random() < READER_SHARE]
        marks = {}
        for user_id in chosen:
            roll = rng.random()
            behind = 0 if roll < 0.5 else rng.randint(1, 20) if roll < 0.8 else rng.randint(21, 500)
            marks[user_id] = max(0, plan.seq - behind)
        wanted[plan.room.id] = marks
    if not wanted:
        return 0

    log(f"Setting read markers for {sum(len(m) for m in wanted.values())} room members...")
    markers: list[ReadMarker] = []
    for room_id, marks in wanted.items():
        seqs = {s for s in marks.values() if s > 0}
        id_of = dict(Message.objects.filter(room_id=room_id, seq__in=seqs).values_list("seq", "id")) if seqs else {}
        markers.extend(
            ReadMarker(room_id=room_id, user_id=user_id, last_read_message_id=id_of.get(s, 0))
            for user_id, s in marks.items()
        )
    ReadMarker.objects.bulk_create(
        markers,
        batch_size=BATCH,
        update_conflicts=True,
        unique_fields=["user", "room"],
        update_fields=["last_read_message_id"],
    )
    return len(markers)


def _progress(*, total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", unit_scale=True, disable=not enabled, mininterval=0.5)


def _analyze(*, log: Log) -> None:
    """Refresh planner statistics (PostgreSQL); after a bulk load they describe empty tables.

    Outside a transaction this is VACUUM (ANALYZE): it also sets the
    visibility map, so index-only scans work at once and the first benchmark
    does not pay for setting hint bits on a million fresh rows.
    """
    if connection.vendor != "postgresql":
        return
    qn = connection.ops.quote_name
    tables = ", ".join(qn(m._meta.db_table) for m in (User, Project, Membership, Room, RoomMember, ReadMarker, Message))
    command = "ANALYZE" if connection.in_atomic_block else "VACUUM (ANALYZE)"
    log(f"{command} {tables}...")
    with connection.cursor() as cursor:
        cursor.execute(f"{command} {tables}")
