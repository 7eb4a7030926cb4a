"""Each hot query uses the index named for it, on a data set large enough for the planner to care.

About 200,000 messages in 400 rooms of 20 projects, 2,000 users, written with
INSERT ... SELECT generate_series once for the module and analyzed. Each test
runs the real selector or service, captures the SQL and parameters the ORM
sent (an execute wrapper), runs ``EXPLAIN (FORMAT JSON)`` on exactly that, and
walks the plan: the expected index is scanned, chat_message is never read
sequentially.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from chat.models import Message, Room, RoomMember
from chat.selectors import history as history_selectors
from chat.selectors import room_events
from chat.selectors import rooms as room_selectors
from chat.selectors import tokens as token_selectors
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from projects import selectors as project_selectors
from projects.models import Project

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

User = get_user_model()

USERS = 2_000
PROJECTS = 20  # with rooms and messages
OTHER_PROJECTS = 980  # quiet ones, so the project table has a realistic size
ROOMS_PER_PROJECT = 20
MESSAGES = 200_000
ARCHIVE_K = PROJECTS * ROOMS_PER_PROJECT  # the last room: busy long ago, silent now
INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
# Equality on both columns: either composite index serves it equally well.
MEMBERSHIP = {"membership_project_user_uniq", "membership_user_project_idx"}
ROOM_MEMBER = {"roommember_room_user_uniq", "roommember_user_room_idx"}


def _like_indexes(table: str, column: str) -> set[str]:
    """The unique index of ``column`` and the *_like twin Django adds for unique varchar columns."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
            [table, f"%({column}%"],
        )
        return {row[0] for row in cursor.fetchall()}

LOAD_SQL = [
    f"""INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                              is_staff, is_active, date_joined)
        SELECT '!', false, 'idx' || g, '', '', '', false, true, now() FROM generate_series(1, {USERS}) g""",
    f"""INSERT INTO projects_project (slug, name, description, created_at, archived)
        SELECT 'idx-p' || g, 'Idx ' || g, '', now(), false FROM generate_series(1, {PROJECTS + OTHER_PROJECTS}) g
        ORDER BY g""",
    # Every user has a home project; every fourth a second one.
    f"""INSERT INTO projects_membership (project_id, user_id, role, joined_at)
        SELECT p.id, u.id, 'member', now() FROM generate_series(1, {USERS}) g
        JOIN auth_user u ON u.username = 'idx' || g
        JOIN projects_project p ON p.slug = 'idx-p' || (g % {PROJECTS} + 1)""",
    f"""INSERT INTO projects_membership (project_id, user_id, role, joined_at)
        SELECT p.id, u.id, 'member', now() FROM generate_series(1, {USERS}) g
        JOIN auth_user u ON u.username = 'idx' || g
        JOIN projects_project p ON p.slug = 'idx-p' || ((g * 7) % {PROJECTS} + 1)
        WHERE g % 4 = 0 AND (g * 7) % {PROJECTS} <> g % {PROJECTS}""",
    # ...and belongs to two of the other, quiet projects (which have no rooms here).
    f"""INSERT INTO projects_membership (project_id, user_id, role, joined_at)
        SELECT p.id, u.id, 'member', now() FROM generate_series(1, {USERS}) g
        CROSS JOIN generate_series(0, 1) j
        JOIN auth_user u ON u.username = 'idx' || g
        JOIN projects_project p ON p.slug = 'idx-p' || ({PROJECTS + 1} + (g * 31 + j * 17) % {OTHER_PROJECTS})""",
    # Every fifth room is private.
    f"""INSERT INTO chat_room (project_id, slug, name, topic, is_private, created_at, last_message_seq)
        SELECT p.id, 'r' || r, 'room ' || r, '', r % 5 = 0, now(), 0
        FROM generate_series(1, {PROJECTS}) g CROSS JOIN generate_series(1, {ROOMS_PER_PROJECT}) r
        JOIN projects_project p ON p.slug = 'idx-p' || g
        ORDER BY g, r""",
    # Read state in a quarter of the project's rooms, and membership of the private ones among them.
    """INSERT INTO chat_readmarker (room_id, user_id, last_read_message_id)
        SELECT r.id, m.user_id, 0
        FROM projects_membership m
        JOIN chat_room r ON r.project_id = m.project_id
        JOIN auth_user u ON u.id = m.user_id
        WHERE u.username LIKE 'idx%'
          AND (substring(u.username FROM 4)::int + substring(r.slug FROM 2)::int) % 4 = 0""",
    """INSERT INTO chat_roommember (room_id, user_id, joined_at)
        SELECT rm.room_id, rm.user_id, now() FROM chat_readmarker rm JOIN chat_room r ON r.id = rm.room_id
        WHERE r.is_private""",
    """CREATE TEMP TABLE idx_rooms ON COMMIT DROP AS
        SELECT row_number() OVER (ORDER BY r.id) AS k, r.id AS room_id,
               (SELECT array_agg(m.user_id ORDER BY m.user_id)
                  FROM projects_membership m WHERE m.project_id = r.project_id) AS members
        FROM chat_room r JOIN projects_project p ON p.id = r.project_id WHERE p.slug LIKE 'idx-p%'""",
    # Skewed: the first rooms are hot (room 1 gets about 5% of all messages).
    # The last room was the busiest of all once and is silent now: 10% of the
    # messages, all among the oldest fifth. Half the messages carry a
    # client_id; 1% are deleted.
    f"""INSERT INTO chat_message (room_id, author_id, seq, body, created_at, client_id, deleted_at)
        SELECT t.room_id, t.members[1 + g % array_length(t.members, 1)],
               row_number() OVER (PARTITION BY t.room_id ORDER BY g),
               'message ' || g, now() - make_interval(secs => {MESSAGES} - g),
               CASE WHEN g % 2 = 0 THEN 'c' || g END,
               CASE WHEN g % 100 = 0 THEN now() END
        FROM generate_series(1, {MESSAGES}) g
        JOIN idx_rooms t ON t.k = CASE
            WHEN g <= {MESSAGES // 5} AND g % 2 = 1 THEN {ARCHIVE_K}
            ELSE 1 + floor({ARCHIVE_K - 1}
                           * power(((g::bigint * 2654435761) % 1000003)::float8 / 1000003, 2))::int
            END
        ORDER BY g""",
    # A third of the messages are thread replies, each to the nearest older root of its room.
    """UPDATE chat_message m SET thread_root_id = (
            SELECT r.id FROM chat_message r WHERE r.room_id = m.room_id AND r.id < m.id AND r.id % 3 <> 0
            ORDER BY r.id DESC LIMIT 1)
        WHERE m.id % 3 = 0""",
    """UPDATE chat_room r SET last_message_seq = s.n, last_message_at = now()
        FROM (SELECT room_id, count(*) AS n FROM chat_message GROUP BY room_id) s WHERE s.room_id = r.id""",
    # Then every tenth message was edited: changes at the end of each room's sequence.
    """INSERT INTO chat_roomchange (room_id, seq, kind, message_id, created_at)
        SELECT m.room_id, r.last_message_seq + row_number() OVER (PARTITION BY m.room_id ORDER BY m.id), 'edit', m.id, now()
        FROM chat_message m JOIN chat_room r ON r.id = m.room_id WHERE m.seq % 10 = 1""",
    """UPDATE chat_room r SET last_message_seq = r.last_message_seq + c.n
        FROM (SELECT room_id, count(*) AS n FROM chat_roomchange GROUP BY room_id) c WHERE c.room_id = r.id""",
    # Read markers part way through each room.
    """UPDATE chat_readmarker rm SET last_read_message_id = COALESCE(
            (SELECT id FROM chat_message m WHERE m.room_id = rm.room_id
              ORDER BY id DESC OFFSET 20 LIMIT 1), 0)""",
    """INSERT INTO chat_apitoken (user_id, name, key_hash, created_at)
        SELECT id, 'api', md5(username) || md5('salt' || username), now() FROM auth_user WHERE username LIKE 'idx%'""",
]

# Only this module's rows are in chat_message while it runs (other tests roll
# back), so TRUNCATE is safe, and it spares the 2,000 user deletions below a
# foreign-key check each on a table with 200,000 dead rows (author_id has no
# index of its own). It refuses, rather than wipe, if anything else is there.
UNLOAD_MESSAGES = """
    DO $$ BEGIN
      IF EXISTS (SELECT 1 FROM chat_message m JOIN chat_room r ON r.id = m.room_id
                 JOIN projects_project p ON p.id = r.project_id WHERE p.slug NOT LIKE 'idx-p%') THEN
        RAISE EXCEPTION 'chat_message holds rows of other tests';
      END IF;
      -- The tables that refer to messages are empty here too (nothing in this module writes them).
      TRUNCATE chat_message, chat_reaction, chat_pin, chat_savedmessage, chat_threadfollow, chat_roomchange,
               chat_upload, chat_notice;
    END $$"""

UNLOAD_SQL = [
    "DELETE FROM chat_roommember WHERE user_id IN (SELECT id FROM auth_user WHERE username LIKE 'idx%')",
    "DELETE FROM chat_readmarker WHERE user_id IN (SELECT id FROM auth_user WHERE username LIKE 'idx%')",
    "DELETE FROM chat_room WHERE project_id IN (SELECT id FROM projects_project WHERE slug LIKE 'idx-p%')",
    "DELETE FROM projects_membership WHERE project_id IN (SELECT id FROM projects_project WHERE slug LIKE 'idx-p%')",
    "DELETE FROM chat_apitoken WHERE user_id IN (SELECT id FROM auth_user WHERE username LIKE 'idx%')",
    "DELETE FROM projects_project WHERE slug LIKE 'idx-p%'",
    "DELETE FROM auth_user WHERE username LIKE 'idx%'",
]


@pytest.fixture(scope="module")
def data(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """The data set, committed once for this module and removed after it."""
    with django_db_blocker.unblock():
        with transaction.atomic(), connection.cursor() as cursor:
            for sql in LOAD_SQL:
                cursor.execute(sql)
        with connection.cursor() as cursor:
            # VACUUM too: production tables are vacuumed (autovacuum also runs on
            # inserts), and index-only scans depend on the visibility map.
            cursor.execute("VACUUM ANALYZE auth_user, projects_project, projects_membership, chat_room, "
                           "chat_roommember, chat_readmarker, chat_message, chat_roomchange, chat_apitoken")
    yield
    with django_db_blocker.unblock():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(UNLOAD_MESSAGES)
            for sql in UNLOAD_SQL:
                cursor.execute(sql)


@contextmanager
def captured() -> Iterator[list[tuple[str, Any]]]:
    """The (sql, params) of every statement the ORM sends inside the block."""
    statements: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: dict) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        yield statements


def plan_nodes(sql: str, params: Any) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        import json

        plan = json.loads(plan)
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    return nodes


def assert_uses(statements: list[tuple[str, Any]], *indexes: str | set[str]) -> None:
    """Every statement reads chat_message through an index; together they use ``indexes``.

    An entry that is a set means "one of these" (an index and its equivalent).
    """
    assert statements
    used: set[str] = set()
    summaries = []
    for sql, params in statements:
        nodes = plan_nodes(sql, params)
        used |= {node.get("Index Name") for node in nodes if node["Node Type"] in INDEX_SCANS}
        summary = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
        summaries.append(summary)
        seq = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "chat_message"]
        assert not seq, f"Seq Scan on chat_message: {summary}\n{sql}"
    for index in indexes:
        wanted = index if isinstance(index, set) else {index}
        assert wanted & used, f"{sorted(wanted)} not used: {summaries}"


def reading(statements: list[tuple[str, Any]], table: str) -> list[tuple[str, Any]]:
    """The SELECTs among ``statements`` that read ``table``."""
    found = [s for s in statements if s[0].lstrip().startswith("SELECT") and f'"{table}"' in s[0]]
    assert found, statements
    return found


def hot_room() -> Room:
    """Busy all along: about 5% of all messages."""
    return Room.objects.select_related("project").get(project__slug="idx-p1", slug="r1")


def archive_room() -> Room:
    """Busiest of all once, silent for the newest 80% of the table."""
    return Room.objects.select_related("project").get(project__slug=f"idx-p{PROJECTS}", slug=f"r{ROOMS_PER_PROJECT}")


ROOMS = [pytest.param(hot_room, id="hot"), pytest.param(archive_room, id="archive")]


def member_of(room: Room) -> Any:
    return User.objects.filter(memberships__project=room.project, username__startswith="idx").order_by("id").first()


def test_data_set_is_large(data: None) -> None:
    assert Message.objects.count() >= MESSAGES
    assert hot_room().last_message_seq > 5_000
    archive = archive_room()
    newest = Message.objects.order_by("-id").values_list("id", flat=True).first()
    newest_in_archive = Message.objects.filter(room=archive).order_by("-id").values_list("id", flat=True).first()
    assert archive.last_message_seq >= MESSAGES // 10
    assert Message.objects.filter(id__gt=newest_in_archive).count() > MESSAGES // 2
    assert newest > newest_in_archive


@pytest.mark.parametrize("room_of", ROOMS)
def test_room_history_newest_page(data: None, room_of: Any) -> None:
    room = room_of()
    with captured() as statements:
        page = history_selectors.room_history(room=room, limit=50)
    assert len(page) == 50
    assert_uses(reading(statements, "chat_message"), "message_room_main_idx")


@pytest.mark.parametrize("room_of", ROOMS)
def test_room_history_older_page(data: None, room_of: Any) -> None:
    room = room_of()
    middle = Message.objects.filter(room=room, seq=room.last_message_seq // 2).values_list("id", flat=True).get()
    with captured() as statements:
        page = history_selectors.room_history(room=room, before=middle, limit=50)
    assert len(page) == 50 and page[-1].id < middle
    assert_uses(reading(statements, "chat_message"), "message_room_main_idx")


@pytest.mark.parametrize("room_of", ROOMS)
def test_room_history_catch_up_after(data: None, room_of: Any) -> None:
    room = room_of()
    early = Message.objects.filter(room=room, seq=100).values_list("id", flat=True).get()
    with captured() as statements:
        page = history_selectors.room_history(room=room, after=early, limit=50)
    assert len(page) == 50 and page[0].id > early
    assert_uses(reading(statements, "chat_message"), "message_room_main_idx")


@pytest.mark.parametrize("room_of", ROOMS)
@pytest.mark.parametrize("cursor", ["newest", "before", "after"])
def test_room_history_dicts_selects_ids_first(data: None, room_of: Any, cursor: str) -> None:
    """The API's history: ids from the index, then messages from the cache or by primary key."""
    room = room_of()
    middle = Message.objects.filter(room=room, seq=room.last_message_seq // 2).values_list("id", flat=True).get()
    kwargs = {"newest": {}, "before": {"before": middle}, "after": {"after": middle}}[cursor]
    with captured() as statements:
        page = history_selectors.room_history_dicts(room=room, limit=50, **kwargs)
    assert len(page) == 50
    assert_uses(reading(statements, "chat_message"), "message_room_main_idx")


@pytest.mark.parametrize("room_of", ROOMS)
def test_resume_reads_messages_and_changes_by_seq(data: None, room_of: Any) -> None:
    """What a socket missed: the last 30 messages and the room's changes after them, in one statement."""
    room = room_of()
    messages = Message.objects.filter(room=room).count()
    changes = room.last_message_seq - messages
    assert changes > 10
    point = Message.objects.filter(room=room, seq=messages - 30).values_list("id", flat=True).get()
    with captured() as statements:
        missed = room_events.room_events_after_many(after_seq=[(room.id, messages - 30)], limit=10_000)
        by_id = room_events.room_events_after_many(after_id=[(room.id, point)], limit=10_000)
    assert missed[("seq", room.id, messages - 30)].events == by_id[("id", room.id, point)].events == 30 + changes
    events = [sql for sql in statements if '"chat_roomchange"' in sql[0]]
    assert len(events) == 2
    assert_uses(events[:1], "message_room_seq_uniq", "roomchange_room_seq_uniq")
    assert_uses(events[1:], "message_room_seq_uniq", "roomchange_room_seq_uniq", "message_room_id_idx")


@pytest.mark.parametrize("room_of", ROOMS)
def test_gap_fill_reads_messages_and_changes_by_seq(data: None, room_of: Any) -> None:
    room = room_of()
    with captured() as statements:
        gap = room_events.room_events_between(room_id=room.id, after_seq=1000, before_seq=1010)
    assert gap.events == 9 and gap.last == 1009
    assert_uses(reading(statements, "chat_message")[:1], "message_room_seq_uniq")
    assert_uses([s for s in statements if '"chat_roomchange"' in s[0]], "roomchange_room_seq_uniq")


@pytest.mark.parametrize("room_of", ROOMS)
def test_main_timeline_pages_skip_replies_without_reading_them(data: None, room_of: Any) -> None:
    """The main timeline's page of ids reads only its own entries: the replies are not in its index."""
    room = room_of()
    assert Message.objects.filter(room=room, thread_root__isnull=False).count() > 1_000
    with captured() as statements:
        page = history_selectors.room_history(room=room, limit=50)
    assert len(page) == 50 and all(m.thread_root_id is None for m in page)
    sql, params = reading(statements, "chat_message")[0]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    plan = plan if isinstance(plan, list) else __import__("json").loads(plan)
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    scans = [n for n in nodes if n.get("Index Name") == "message_room_main_idx"]
    # The newest 50 of the main timeline: exactly 50 (or 51) index entries read, no reply filtered out.
    assert scans and all(n["Actual Rows"] <= 51 and not n.get("Rows Removed by Filter") for n in scans), scans


def test_thread_replies_and_summaries_use_the_thread_index(data: None) -> None:
    room = hot_room()
    root = Message.objects.filter(room=room, thread_root__isnull=True, id__in=Message.objects.filter(
        thread_root__isnull=False, room=room).values("thread_root_id")).order_by("-id").first()
    with captured() as statements:
        ids = history_selectors.thread_reply_ids(root_id=root.id, limit=50)
        summaries = history_selectors.thread_summaries(root_ids=[root.id])
    assert ids and summaries[root.id]["reply_count"] >= len(ids)
    assert_uses(reading(statements, "chat_message"), "message_thread_id_idx")


def test_rooms_for_user_with_unread_counts(data: None) -> None:
    room = hot_room()
    user = member_of(room)
    with captured() as statements:
        rooms = room_selectors.rooms_for_user(user=user, project=room.project)
    assert rooms and any(r.unread for r in rooms)
    assert_uses(reading(statements, "chat_message"), "message_room_main_idx")
    assert_uses(reading(statements, "projects_membership"), MEMBERSHIP)
    assert_uses(reading(statements, "chat_readmarker"), "readmarker_user_room_uniq")


def test_projects_for_user(data: None) -> None:
    user = User.objects.get(username="idx8")  # two busy projects, two quiet ones
    with captured() as statements:
        projects = list(project_selectors.projects_for_user(user=user))
    assert len(projects) == 4
    assert_uses(reading(statements, "projects_membership"), "membership_user_project_idx")


def test_room_get_for_user_membership_check(data: None) -> None:
    member = RoomMember.objects.filter(room__is_private=True, room__project__slug__startswith="idx-p").first()
    room, user = member.room, member.user
    with captured() as statements:
        found = room_selectors.room_get_for_user(user=user, room_id=room.id)
    assert found.id == room.id
    assert_uses(statements, "chat_room_pkey", MEMBERSHIP, ROOM_MEMBER)


def test_project_get_for_user_membership_check(data: None) -> None:
    project = Project.objects.get(slug="idx-p4")
    user = User.objects.filter(memberships__project=project).order_by("id").first()
    with captured() as statements:
        found, membership = project_selectors.project_get_for_user(user=user, slug="idx-p4")
    assert found.id == project.id
    assert_uses(statements, _like_indexes("projects_project", "slug"), MEMBERSHIP)


def test_duplicate_send_looks_up_author_and_client_id(data: None) -> None:
    room = hot_room()
    original = Message.objects.filter(room=room, client_id__isnull=False).select_related("author").first()
    with captured() as statements:
        message, created = message_services.message_create(
            room=room, author=original.author, body="retry", client_id=original.client_id
        )
    assert (message.id, created) == (original.id, False)
    lookup = [s for s in reading(statements, "chat_message") if '"client_id" =' in s[0]]
    assert_uses(lookup, "message_author_client_id_uniq")


def test_user_for_token(data: None) -> None:
    user = User.objects.get(username="idx10")
    _, raw = account_services.token_create(user=user)
    with captured() as statements:
        assert token_selectors.user_for_token(raw_key=raw) == user
    assert_uses(reading(statements, "chat_apitoken"), _like_indexes("chat_apitoken", "key_hash"))


@pytest.mark.parametrize("room_of", ROOMS)
def test_room_mark_read_newest_id(data: None, room_of: Any) -> None:
    room = room_of()
    user = member_of(room)
    with captured() as statements:
        room_services.room_mark_read(room=room, user=user, last_read_message_id=10**12)
    assert_uses(reading(statements, "chat_message"), "message_room_id_idx")
