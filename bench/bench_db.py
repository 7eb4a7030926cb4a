"""Latency of every hot query on a large data set, with the index each uses: ``make bench-db``.

    python -m bench.bench_db --reset-stats [--json] [--iterations 2000]

Makes sure the data set exists (bench.seed with the sizes below when it
does not), then calls each hot selector ``--iterations`` times with varied
parameters (random rooms, users, cursors) and prints p50/p95/p99 of the time
spent in the database per call and of the whole call (ORM included), the
queries per call, and the indexes the plans use (EXPLAIN).

Selectors are measured with the cache off: the numbers are the database path,
which is what every cache miss pays.

Everything runs in one transaction that is rolled back, so the shared data set
is left as it was: the bench adds a few API tokens and client ids for the
lookups that need them, and throws them away.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import orjson
from django.db import connection, transaction
from django.test.utils import override_settings

from bench import setup_django

INDEX_NODES = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}
# Sequential scans of tables this small are what the planner should do.
SMALL_TABLE_ROWS = 10_000
TARGET_P95_MS = 2.0
# Calls whose statements are explained: parameters decide some plans and which queries run.
PLAN_SAMPLE = 10


@dataclass
class Result:
    name: str
    db_ms: list[float] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)
    queries: float = 0
    indexes: list[str] = field(default_factory=list)
    seq_scans: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "query": self.name,
            "calls": len(self.call_ms),
            "queries_per_call": self.queries,
            "db_p50_ms": _pct(self.db_ms, 50),
            "db_p95_ms": _pct(self.db_ms, 95),
            "db_p99_ms": _pct(self.db_ms, 99),
            "call_p50_ms": _pct(self.call_ms, 50),
            "call_p95_ms": _pct(self.call_ms, 95),
            "call_p99_ms": _pct(self.call_ms, 99),
            "indexes": self.indexes,
            "seq_scans": self.seq_scans,
        }


def _pct(values: list[float], p: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], 3)


class BenchDbError(Exception):
    """The benchmark cannot run here (not PostgreSQL, a data set without the rows a query needs)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_db",
        description="Benchmark the hot queries (p50/p95/p99 ms and the index each uses) on a large data set.",
    )
    p.add_argument("--iterations", type=int, default=2000, help="calls per query (default 2000)")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--projects", type=int, default=20)
    p.add_argument("--rooms", type=int, default=500)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=8, help="random seed for the parameters")
    p.add_argument("--max-seconds", type=float, default=120.0, help="time cap per query")
    p.add_argument(
        "--reset-stats",
        action="store_true",
        help="reset this database's statistics first, so perf_report shows only this workload",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def run(options: argparse.Namespace, *, out: TextIO, err: TextIO) -> dict[str, Any]:
    """Seed if needed, measure every hot query, print the report to ``out``; progress goes to ``err``.

    Raises BenchDbError when it cannot measure. Leaves the data set as it was
    (the measuring transaction is rolled back).
    """
    if connection.vendor != "postgresql":
        raise BenchDbError("bench_db measures PostgreSQL; set DATABASE_URL.")
    iterations = max(1, options.iterations)
    _ensure_data(options, err)
    if options.reset_stats:
        _reset_stats()
    rng = random.Random(options.seed)
    load_start = _load_average()
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}):
        with transaction.atomic():
            cases = _cases(rng, iterations)
            results = [_run(name, calls, options.max_seconds, err) for name, calls in cases]
            transaction.set_rollback(True)
    report = {
        "machine": machine(),
        "load_average": {"start": load_start, "end": _load_average()},
        "iterations": iterations,
        "results": [r.row() for r in results],
    }
    if options.json:
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print(report, out)
    return report


def _ensure_data(options: argparse.Namespace, err: TextIO) -> None:
    from django.contrib.auth import get_user_model

    from bench.seed import seed
    from chat.models import Room

    counts = {
        "users": get_user_model().objects.count(),
        "rooms": Room.objects.count(),
        "messages": _estimated_rows("chat_message"),
    }
    wanted = {"users": options.users, "rooms": options.rooms, "messages": options.messages}
    if all(counts[k] >= 0.99 * wanted[k] for k in wanted):
        return
    _line(err, f"Data set too small ({counts}); seeding {wanted} with bench.seed...")
    seed(
        users=options.users,
        projects=options.projects,
        rooms=options.rooms,
        messages=options.messages,
        progress=False,
        write=lambda text: _line(err, text),
    )


def _line(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _run(name: str, calls: list[Callable[[], Any]], max_seconds: float, err: TextIO) -> Result:
    result = Result(name)
    statements: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: dict) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    sampled = calls[:PLAN_SAMPLE]
    with connection.execute_wrapper(capture):
        for call in sampled:
            call()
    result.queries = round(len(statements) / len(sampled), 1)
    result.indexes, result.seq_scans = _plan_summary(statements)

    db_seconds = [0.0]

    def timed(execute: Any, sql: str, params: Any, many: bool, context: dict) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            db_seconds[0] += time.perf_counter() - start

    for call in calls[:50]:  # warm the caches of PostgreSQL and Django
        call()
    deadline = time.monotonic() + max_seconds
    with connection.execute_wrapper(timed):
        for call in calls:
            db_seconds[0] = 0.0
            start = time.perf_counter()
            call()
            result.call_ms.append((time.perf_counter() - start) * 1000)
            result.db_ms.append(db_seconds[0] * 1000)
            if time.monotonic() > deadline:
                _line(err, f"{name}: stopped after {len(result.call_ms)} calls (--max-seconds)")
                break
    return result


def _print(report: dict[str, Any], stream: TextIO) -> None:
    def out(text: str) -> None:
        stream.write(text + "\n")

    m = report["machine"]
    out(f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_gb']} GB RAM, {m['postgresql']}, Python {m['python']}")
    out(f"Data: {m['messages']:,} messages, {m['rooms']:,} rooms, {m['users']:,} users; "
        f"{report['iterations']} calls per query, cache off")
    load = report["load_average"]
    out(f"Load average (1 min) at start {load['start']}, at end {load['end']}: other work on the machine skews p95/p99.")
    out("")
    header = (
        f"{'query':<32} {'calls':>5} {'q/call':>6} {'db p50':>7} {'db p95':>7} {'db p99':>7} "
        f"{'call p50':>8} {'call p95':>8} {'call p99':>8}  indexes"
    )
    out(header)
    out("-" * len(header))
    for row in report["results"]:
        flag = "" if row["db_p95_ms"] <= TARGET_P95_MS else "  > target"
        indexes = ", ".join(row["indexes"]) or "-"
        if row["seq_scans"]:
            indexes += "; SEQ SCAN " + ", ".join(row["seq_scans"])
        out(
            f"{row['query']:<32} {row['calls']:>5} {row['queries_per_call']:>6} {row['db_p50_ms']:>7.3f} {row['db_p95_ms']:>7.3f} "
            f"{row['db_p99_ms']:>7.3f} {row['call_p50_ms']:>8.3f} {row['call_p95_ms']:>8.3f} "
            f"{row['call_p99_ms']:>8.3f}  {indexes}{flag}"
        )
    out("")
    out(f"db = time in cursor.execute per call (round trips included); call = the whole selector call. "
        f"Target: db p95 <= {TARGET_P95_MS} ms.")


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _estimated_rows(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        estimate = cursor.fetchone()[0]
        if estimate:
            return estimate
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
        return cursor.fetchone()[0]


def _reset_stats() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_reset()")
        cursor.execute(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0) "
            "WHERE EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
        )


def _plan_summary(statements: list[tuple[str, Any]]) -> tuple[list[str], list[str]]:
    """Index names the statements' plans scan, and the large tables they read sequentially."""
    indexes: list[str] = []
    seq: list[str] = []
    for sql, params in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = orjson.loads(plan)
        stack = [plan[0]["Plan"]]
        while stack:
            node = stack.pop()
            stack.extend(node.get("Plans", ()))
            if node["Node Type"] in INDEX_NODES and node.get("Index Name") not in indexes:
                indexes.append(node["Index Name"])
            if node["Node Type"] == "Seq Scan":
                table = node.get("Relation Name", "?")
                if _estimated_rows(table) >= SMALL_TABLE_ROWS and table not in seq:
                    seq.append(table)
    return indexes, seq


def _cases(rng: random.Random, n: int) -> list[tuple[str, list[Callable[[], Any]]]]:
    """(name, n prepared calls) for every hot query; parameters are drawn before any timing."""
    from django.contrib.auth import get_user_model

    from chat import signals as chat_signals
    from chat.models import Message, ReadMarker, Room
    from chat.selectors import history as history_selectors
    from chat.selectors import room_events
    from chat.selectors import rooms as room_selectors
    from chat.selectors import tokens as token_selectors
    from chat.selectors import unread as unread_selectors
    from chat.services import accounts as account_services
    from projects import selectors as project_selectors
    from projects.models import Membership, Project

    User = get_user_model()
    rooms = {
        room.id: room
        for room in Room.objects.select_related("project").filter(last_message_seq__gte=60)
    }
    if not rooms:
        raise BenchDbError("No room has 60 messages or more: seed a data set first.")
    room_ids = sorted(rooms)
    # Random messages: busy rooms come up as often as they are busy, like real traffic.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, room_id, seq FROM chat_message TABLESAMPLE SYSTEM (2) REPEATABLE (%s) "
            "WHERE room_id = ANY(%s) AND seq > 50 LIMIT %s",
            [rng.randrange(1 << 30), room_ids, 3 * n],
        )
        sample = cursor.fetchall()
        if len(sample) < 3 * n:  # a small data set: sample rows, not pages
            cursor.execute(
                "SELECT id, room_id, seq FROM chat_message WHERE room_id = ANY(%s) AND seq > 50 "
                "ORDER BY random() LIMIT %s",
                [room_ids, 3 * n],
            )
            sample = cursor.fetchall()
    rng.shuffle(sample)
    sample = cycle_to(3 * n, sample)
    cursors, catchups, resumes = sample[:n], sample[n : 2 * n], sample[2 * n : 3 * n]

    # Resume: the id of a message 1..200 back from the room's newest.
    resume_keys = [(room_id, max(1, rooms[room_id].last_message_seq - rng.randint(1, 200))) for _, room_id, _ in resumes]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.i, m.id FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS t(room_id, seq, i) "
            "JOIN chat_message m ON m.room_id = t.room_id AND m.seq = t.seq",
            [[k[0] for k in resume_keys], [k[1] for k in resume_keys]],
        )
        found = dict(cursor.fetchall())
    resume_args = cycle_to(n, [(room_id, found[i + 1]) for i, (_, room_id, _) in enumerate(resumes) if i + 1 in found])

    memberships = list(Membership.objects.order_by("?").values_list("user_id", "project_id")[:n])
    room_members = list(ReadMarker.objects.order_by("?").values_list("user_id", "room_id")[:n])
    users = User.objects.in_bulk({u for u, _ in memberships} | {u for u, _ in room_members})
    projects = Project.objects.in_bulk({p for _, p in memberships})
    room_ids_of: dict[int, list[int]] = {}
    for room_id, project_id in Room.objects.filter(project_id__in=projects).values_list("id", "project_id"):
        room_ids_of.setdefault(project_id, []).append(room_id)
    # Each project's rooms under their current unread state, read once: the
    # measured call is the tails' fill, which every cache miss pays.
    states_of = {p: room_selectors.rooms_unread_states(room_ids=ids) for p, ids in room_ids_of.items()}

    # Rows only this transaction sees: API tokens, and client ids on sampled messages.
    token_users = rng.sample(list(users.values()), min(200, len(users)))
    raw_keys = [account_services.token_create(user=user, name="bench")[1] for user in token_users]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE chat_message SET client_id = 'bench-' || id WHERE id = ANY(%s) RETURNING author_id, client_id",
            [[mid for mid, _, _ in cursors]],
        )
        sent = cursor.fetchall()
    authors = User.objects.in_bulk({a for a, _ in sent})

    def history(room_id: int, **kw: Any) -> Callable[[], Any]:
        return lambda: history_selectors.room_history(room=rooms[room_id], limit=50, **kw)

    def gap() -> Callable[[], Any]:
        room = rooms[rng.choice(room_ids)]
        after = rng.randint(0, max(0, room.last_message_seq - 21))
        before = after + rng.randint(2, 20)
        return lambda: room_events.room_events_between(room_id=room.id, after_seq=after, before_seq=before)

    def duplicate_lookup(author_id: int, client_id: str) -> Callable[[], Any]:
        # The lookup chat.services.messages.message_create runs when a client_id repeats.
        author = authors[author_id]
        return lambda: Message.objects.select_related("author").filter(author=author, client_id=client_id).first()

    def cycle(items: list[Any]) -> list[Any]:
        return cycle_to(n, items)

    return [
        ("room_history newest", [history(rng.choice(room_ids)) for _ in range(n)]),
        ("room_history before=", [history(room_id, before=mid) for mid, room_id, _ in cursors]),
        ("room_history after=", [history(room_id, after=mid) for mid, room_id, _ in catchups]),
        (
            "room_events_after (resume)",
            [
                (lambda r=room_id, a=after_id: room_events.room_events_after_many(after_id=[(r, a)], limit=500))
                for room_id, after_id in resume_args
            ],
        ),
        ("room_events_between (gap)", [gap() for _ in range(n)]),
        (
            "rooms_for_user (unread)",
            [
                (lambda u=users[u], p=projects[p]: room_selectors.rooms_for_user(user=u, project=p))
                for u, p in cycle(memberships)
            ],
        ),
        (
            # With the cache on, a room's unread tail is read from the database
            # once per room and new message, then shared by all its readers.
            "room tails (unread cache fill)",
            [
                (lambda states=states_of[p]: unread_selectors.room_unread_tails(states=states))
                for _, p in cycle(memberships)
            ],
        ),
        (
            "projects_for_user",
            [(lambda u=users[u]: list(project_selectors.projects_for_user(user=u))) for u, _ in cycle(memberships)],
        ),
        (
            "room_get_for_user",
            [(lambda u=users[u], r=r: room_selectors.room_get_for_user(user=u, room_id=r)) for u, r in cycle(room_members)],
        ),
        (
            "project_get_for_user",
            [
                (lambda u=users[u], s=projects[p].slug: project_selectors.project_get_for_user(user=u, slug=s))
                for u, p in cycle(memberships)
            ],
        ),
        ("message by (author, client_id)", [duplicate_lookup(a, c) for a, c in cycle(sent)]),
        ("user_for_token", [(lambda k=k: token_selectors.user_for_token(raw_key=k)) for k in cycle(raw_keys)]),
        (
            # Every user save (a log-in's last_login, a profile edit) drops the
            # user's cached token lookups: chat.signals.user_changed reads them.
            "tokens of a user (user save)",
            [
                (lambda u=users[u]: chat_signals.user_changed(sender=type(u), instance=u))
                for u, _ in cycle(memberships)
            ],
        ),
    ]


def cycle_to(n: int, items: list[Any]) -> list[Any]:
    """``n`` items, repeating ``items`` as needed."""
    if not items:
        raise BenchDbError("The data set lacks rows for one of the queries; seed it first.")
    return [items[i % len(items)] for i in range(n)]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from django.contrib.auth import get_user_model

    from chat.models import Room

    cpu_model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gb: float | str = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gb": ram_gb,
        "postgresql": f"{version} (shared_buffers {shared_buffers})",
        "python": platform.python_version(),
        "messages": _estimated_rows("chat_message"),
        "rooms": Room.objects.count(),
        "users": get_user_model().objects.count(),
    }


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    setup_django()
    try:
        run(options, out=sys.stdout, err=sys.stderr)
    except BenchDbError as exc:
        print(f"bench_db: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
