"""Summarize py-spy raw profiles of the benchmark's server processes.

    python -m bench.ws_profile var/ws-profile/ours-p1-step3-server0.txt

ws_bench --profile-dir records every server process with
``py-spy record --format raw --threads --idle``: each line is one stack
(thread first, leaf last) and its sample count, idle samples included, so a
thread's samples are its wall-clock time. For each thread this prints what the
thread was doing at the leaf (running code, waiting for PostgreSQL, for Redis,
for another thread, or idle), then the share of its time spent under named
parts of the stack (inclusive, so the lines overlap), then the busiest
functions by self time. C extensions (orjson, hiredis) have no frames of their
own: their time shows up as the calling Python line.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

# What a sample is doing, decided by its leaf frame (first match wins).
LEAF_STATES: list[tuple[str, tuple[str, ...]]] = [
    ("idle: event loop in epoll", ("EpollSelector.select", "Selector.select (selectors.py")),
    ("waiting: PostgreSQL", ("(psycopg/connection.py", "(psycopg/waiting.py", "(psycopg_pool/")),
    ("waiting: Redis", ("(redis/_parsers/", "read_from_socket (redis")),
    ("waiting: another thread / the event loop", ("Condition.wait", "Event.wait", "Lock.acquire", "run_until_future", "Thread.join")),
    ("idle: thread pool waiting for work", ("_worker (concurrent/futures/thread.py",)),
]

# Named parts of the stack (a sample counts for every part it is under).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("message.send: whole handler (database_sync_to_async)", ("_send_message (chat/consumers.py",)),
    ("  message_create (queries + COMMIT + publish)", ("message_create (chat/services/messages.py",)),
    ("  COMMIT, with on_commit publish", ("Atomic.__exit__ (django/db/transaction.py",)),
    ("  on_commit publish: async_to_sync(group_send) from the DB thread", ("publish_room_event (chat/events.py",)),
    ("  room permission check (room_get_for_user)", ("room_get_for_user (chat/selectors/rooms.py",)),
    ("pool checkout health check (a query per checkout)", ("check_connection (psycopg_pool",)),
    ("close_old_connections (per consumer message)", ("close_old_connections (django/db",)),
    ("slow-query wrapper", ("(perf/db.py",)),
    ("channel layer group_send", ("RedisChannelLayer.group_send",)),
    ("channel layer receive (incl. bzpopmin wait)", ("RedisChannelLayer.receive ",)),
    ("channel layer msgpack (de)serialize", ("serialize (channels_redis", "deserialize (channels_redis")),
    ("consumer dispatch of layer events", ("ChatConsumer.dispatch", "ReferenceChatConsumer.chat_message", "AsyncConsumer.dispatch")),
    ("  room_event (ours)", ("ChatConsumer.room_event",)),
    ("  json.dumps per receiver (reference)", ("(json/encoder.py", "dumps (json/__init__.py")),
    ("outbox (batching)", ("(chat/outbox.py",)),
    ("WebSocket send (autobahn sendMessage)", ("sendMessage (autobahn",)),
    ("WebSocket receive (autobahn processData)", ("processData (autobahn",)),
    ("daphne keepalive pings", ("_sendAutoPing",)),
    ("daphne timeout checker", ("timeout_checker (daphne",)),
    ("daphne access log", ("(daphne/access.py",)),
    ("socket writes (twisted doWrite)", ("doWrite (twisted",)),
    ("token auth (user_for_token)", ("user_for_token (chat/selectors/tokens.py",)),
    ("subscribe handler", ("on_subscribe (chat/consumers.py",)),
    ("presence", ("(chat/presence.py",)),
    ("metrics (prometheus_client)", ("(prometheus_client/",)),
    ("Django cache (django_redis)", ("(django_redis/",)),
    ("asgiref sync_to_async / async_to_sync machinery", ("(asgiref/sync.py",)),
]

_LINE = re.compile(r":\d+\)$")


@dataclass
class Thread:
    name: str
    samples: int = 0
    states: Counter = field(default_factory=Counter)
    parts: Counter = field(default_factory=Counter)
    self_time: Counter = field(default_factory=Counter)


def _thread_name(frame: str) -> str:
    # "thread (1234): ThreadPoolExecutor-0_0" -> "ThreadPoolExecutor-0_0"
    name = frame.split(":", 1)[1].strip() if ":" in frame else frame
    return re.sub(r"_\d+$", "_*", name)  # pool threads together


def load(path: Path) -> dict[str, Thread]:
    threads: dict[str, Thread] = defaultdict(lambda: Thread(""))
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[0].startswith("thread ("):
            name, frames = _thread_name(frames[0]), frames[1:]
        else:
            name = "all threads"
        thread = threads[name]
        thread.name = name
        thread.samples += n
        leaf = frames[-1] if frames else ""
        thread.states[next((state for state, keys in LEAF_STATES if any(k in leaf for k in keys)), "running")] += n
        thread.self_time[_LINE.sub(")", leaf)] += n
        joined = ";".join(frames)
        for part, keys in PARTS:
            if any(k in joined for k in keys):
                thread.parts[part] += n
    return dict(threads)


def report(path: Path, top: int = 12) -> str:
    threads = load(path)
    total = sum(t.samples for t in threads.values())
    lines = [f"== {path.name}: {total} samples"]
    for thread in sorted(threads.values(), key=lambda t: -t.samples):
        if thread.samples < total * 0.02:
            continue
        pct = lambda n: 100.0 * n / thread.samples  # noqa: E731
        lines.append(f"-- thread {thread.name}: {thread.samples} samples")
        for state, n in thread.states.most_common():
            lines.append(f"   {pct(n):5.1f}%  {state}")
        busy = thread.samples - sum(n for s, n in thread.states.items() if s.startswith("idle"))
        if busy:
            lines.append(f"   under (share of the {busy} non-idle samples):")
            for part, _ in PARTS:
                n = thread.parts.get(part, 0)
                if n >= busy * 0.01:
                    lines.append(f"   {100.0 * n / busy:5.1f}%  {part}")
        lines.append("   top self time:")
        for frame, n in thread.self_time.most_common(top):
            lines.append(f"   {pct(n):5.1f}%  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    for path in args.files:
        print(report(path, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
