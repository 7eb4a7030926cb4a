"""Search benchmark: GET /api/v1/projects/{slug}/search latency for common, medium and rare words.

    python -m bench.search --runs 3 --requests 300

Starts one server process (``python -m chatsite.server``, uvicorn) on
127.0.0.1 against the seeded data set (DATABASE_URL, REDIS_URL), gives a
sample of load users a bearer token each, and asks, one request at a time (a
closed loop of one client, so latency is the server's and not queueing), for
each word in turn:

- ``common``: ``the``, in about 58% of the seeded messages;
- ``medium``: ``stale``, in about 8%;
- ``rare``: a word the benchmark plants once in ``--rare-rooms`` public load
  rooms (through chat.services, the one writer), about 0.005% of the messages;
  readers outside those rooms find nothing, which is the index's fastest case
  and also what most rare-word searches look like;
- ``phrase_from``: a quoted phrase with a ``from:`` filter (a member of the
  reader's project), the shape of a narrowed search.

Each reader searches a project they belong to and read at least ``MIN_ROOMS``
rooms of (public ones, and the private ones they are in): up to 25 rooms and about
50,000 messages (some load projects are mostly private rooms; a reader of
none would measure an empty answer). Each scenario is warmed up (``--warmup`` requests,
not counted), then measured for ``--requests`` requests; ``--runs`` repeats
the whole set so the spread on a shared machine shows. Reported per
scenario and run: p50/p95/p99/max latency as the client saw it, p50/p95 of the
server's own request time and database time (from its request log), server
CPU per request and the load generator's own CPU per request (this process). The tokens are deleted
at the end; the planted messages stay (a later run reuses them).

Needs the data set: ``python -m bench.seed --users 10000 --projects 20
--rooms 500 --messages 1000000`` with the same DATABASE_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import ROOT, service_urls
from bench.bench_http import data_set, free_port, machine, setup_django, start_server, stop_server, wait_healthy

TOKEN_NAME = "bench-search"
MIN_ROOMS = 10
RARE_WORD = "quokkalicious"
SCENARIOS = {
    "common": "the",
    "medium": "stale",
    "rare": RARE_WORD,
    "phrase_from": '"build is green" from:{author}',
}


@dataclass
class Reader:
    user_id: int
    project_slug: str
    author: str  # a member of the project, for from:
    token: str = ""


def pick_readers(*, count: int, seed: int) -> list[Reader]:
    """``count`` load users, each with one of their projects (where they read ``MIN_ROOMS`` rooms or more) and
    another member of it to filter on."""
    from django.contrib.auth import get_user_model

    from chat.selectors.rooms import readable_room_ids
    from projects.models import Membership

    rows = list(
        Membership.objects.filter(user__username__startswith="load", project__slug__startswith="load")
        .order_by("user_id", "project_id")
        .values_list("user_id", "project_id", "project__slug")
    )
    if not rows:
        raise SystemExit("No load data set: run python -m bench.seed first (see --help).")
    rng = random.Random(seed)
    rng.shuffle(rows)
    users = get_user_model().objects.in_bulk([user_id for user_id, _, _ in rows[: count * 4]])
    readers = []
    for user_id, project_id, slug in rows[: count * 4]:
        if len(readers) == count:
            break
        # Someone who reads little (a project of private rooms) would measure the empty answer instead.
        if readable_room_ids(users[user_id]).filter(project_id=project_id).count() < MIN_ROOMS:
            continue
        other = (
            Membership.objects.filter(project_id=project_id).exclude(user_id=user_id)
            .order_by("user_id").values_list("user__username", flat=True).first()
        )  # fmt: skip
        readers.append(Reader(user_id=user_id, project_slug=slug, author=other or ""))
    return readers


def plant_rare_word(*, rooms: int, seed: int) -> int:
    """Make sure ``RARE_WORD`` is in one message of each of ``rooms`` public load rooms; returns how many exist."""
    from django.db import connection

    from chat.models import Room
    from chat.search_index import body_vector_sql
    from chat.services import messages as message_services
    from projects.models import Membership

    def existing() -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT DISTINCT room_id FROM chat_message m WHERE {body_vector_sql('m.body')} "
                f"@@ plainto_tsquery(%s::regconfig, %s)",
                [_config(), RARE_WORD],
            )
            return {row[0] for row in cursor.fetchall()}

    have = existing()
    candidates = list(Room.objects.filter(slug__startswith="load", is_private=False).order_by("id").select_related("project"))
    rng = random.Random(seed)
    rng.shuffle(candidates)
    for room in candidates:
        if len(have) >= rooms:
            break
        if room.id in have:
            continue
        author = Membership.objects.filter(project_id=room.project_id).order_by("user_id").first().user
        message_services.message_create(room=room, author=author, body=f"Has anyone seen the {RARE_WORD} report?")
        have.add(room.id)
    return len(existing())


def _config() -> str:
    from chat.search_index import search_config

    return search_config()


def sign_in(readers: list[Reader]) -> None:
    from django.contrib.auth import get_user_model

    from chat.services import accounts as account_services

    users = get_user_model().objects.in_bulk([r.user_id for r in readers])
    for reader in readers:
        reader.token = account_services.token_create(user=users[reader.user_id], name=TOKEN_NAME)[1]


def sign_out() -> None:
    from chat.models import ApiToken

    ApiToken.objects.filter(name=TOKEN_NAME).delete()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def cpu_seconds(pid: int) -> float:
    import psutil

    try:
        process = psutil.Process(pid)
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            total += sum(child.cpu_times()[:2])
        return total
    except psutil.Error:
        return 0.0


def server_timings(log_path: Path, offset: int, *, skip: int) -> tuple[list[float], list[float]]:
    """The server's own request time and database time (ms) of the searches logged after ``offset``, the first
    ``skip`` (the warm-up) left out: what the server spent, without the client's side and the network."""
    durations, database = [], []
    with log_path.open("rb") as log:
        log.seek(offset)
        for line in log:
            start = line.find(b"{")
            if start < 0 or b'"event":"request"' not in line or b"/search" not in line:
                continue
            record = json.loads(line[start:])
            durations.append(record["duration_ms"])
            database.append(record.get("db_ms", 0.0))
    return durations[skip:], database[skip:]


def measure(client: Any, *, scenario: str, readers: list[Reader], requests: int, warmup: int, seed: int, server_pid: int,
            log_path: Path) -> dict[str, Any]:  # fmt: skip
    """``warmup`` then ``requests`` searches of ``scenario``, one at a time; latency in ms and CPU per request."""
    log_offset = log_path.stat().st_size
    rng = random.Random(f"{seed}:{scenario}")
    template = SCENARIOS[scenario]
    latencies: list[float] = []
    hits: list[int] = []
    errors = 0
    for n in range(warmup + requests):
        reader = rng.choice(readers)
        q = template.format(author=reader.author)
        url = f"/api/v1/projects/{reader.project_slug}/search?" + urllib.parse.urlencode({"q": q, "limit": 20})
        if n == warmup:
            cpu_self, cpu_server, wall = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
        started = time.perf_counter()
        response = client.get(url, headers={"Authorization": f"Bearer {reader.token}"})
        elapsed = (time.perf_counter() - started) * 1000
        if n < warmup:
            continue
        if response.status_code != 200:
            errors += 1
            continue
        latencies.append(elapsed)
        hits.append(len(response.json()["items"]))
    wall = time.perf_counter() - wall
    done = max(1, len(latencies))
    time.sleep(0.2)  # the server's request log is written by a background thread
    served, database = server_timings(log_path, log_offset, skip=warmup)
    return {
        "scenario": scenario,
        "q": template,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "max_ms": round(max(latencies), 2) if latencies else None,
        "server_p50_ms": round(percentile(served, 50), 2) if served else None,
        "server_p95_ms": round(percentile(served, 95), 2) if served else None,
        "db_p50_ms": round(percentile(database, 50), 2) if database else None,
        "db_p95_ms": round(percentile(database, 95), 2) if database else None,
        "mean_hits": round(statistics.mean(hits), 1) if hits else 0,
        "rps": round(len(latencies) / wall, 1) if wall > 0 else None,
        "server_cpu_ms_per_req": round((cpu_seconds(server_pid) - cpu_server) * 1000 / done, 2),
        "loadgen_cpu_ms_per_req": round((time.process_time() - cpu_self) * 1000 / done, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="chatsite.settings.test")
    parser.add_argument("--readers", type=int, default=50, help="load users searching (a token each)")
    parser.add_argument("--requests", type=int, default=300, help="measured requests per scenario and run")
    parser.add_argument("--warmup", type=int, default=30, help="requests per scenario before measuring")
    parser.add_argument("--runs", type=int, default=3, help="how many times to measure every scenario")
    parser.add_argument("--rare-rooms", type=int, default=50, help="public load rooms that get the rare word once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "bench-search.json")
    args = parser.parse_args(argv)
    urls = service_urls()
    if urls is None:
        return 2
    setup_django(*urls, args.settings)
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would cost the generator CPU

    readers = pick_readers(count=args.readers, seed=args.seed)
    planted = plant_rare_word(rooms=args.rare_rooms, seed=args.seed)
    sign_in(readers)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": args.settings, "DEBUG": "false"}
    proc: subprocess.Popen | None = None
    results: list[dict[str, Any]] = []
    try:
        log_path = args.json.with_suffix(".server.log")
        proc = start_server(port=port, env=env, log_path=log_path)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        print(f"{planted} messages hold the rare word; {len(readers)} readers; server on {base}", flush=True)
        with httpx.Client(base_url=base, timeout=30) as client:
            for run in range(1, args.runs + 1):
                for scenario in SCENARIOS:
                    row = measure(client, scenario=scenario, readers=readers, requests=args.requests,
                                  warmup=args.warmup, seed=args.seed + run, server_pid=proc.pid, log_path=log_path)  # fmt: skip
                    row["run"] = run
                    results.append(row)
                    print(
                        f"run {run} {scenario:12} p50 {row['p50_ms']:7.2f} ms  p95 {row['p95_ms']:7.2f} ms  "
                        f"p99 {row['p99_ms']:7.2f} ms  max {row['max_ms']:7.2f} ms  "
                        f"(server p50 {row['server_p50_ms']} p95 {row['server_p95_ms']}, database p50 {row['db_p50_ms']} "
                        f"p95 {row['db_p95_ms']} ms)  hits {row['mean_hits']:5.1f}  "
                        f"{row['rps']:6.1f} req/s  server CPU {row['server_cpu_ms_per_req']:6.2f} ms/req  "
                        f"load generator CPU {row['loadgen_cpu_ms_per_req']:5.2f} ms/req  errors {row['errors']}",
                        flush=True,
                    )
    finally:
        stop_server(proc)
        sign_out()
    summary = {}
    for scenario in SCENARIOS:
        rows = [r for r in results if r["scenario"] == scenario and r["p95_ms"] is not None]
        if rows:
            summary[scenario] = {
                "p50_ms_runs": [r["p50_ms"] for r in rows],
                "p95_ms_runs": [r["p95_ms"] for r in rows],
                "p95_ms_median": statistics.median(r["p95_ms"] for r in rows),
            }
            print(f"{scenario:12} p50 over runs {min(summary[scenario]['p50_ms_runs']):.2f}–{max(summary[scenario]['p50_ms_runs']):.2f} ms, "
                  f"p95 {min(summary[scenario]['p95_ms_runs']):.2f}–{max(summary[scenario]['p95_ms_runs']):.2f} ms")  # fmt: skip
    args.json.write_text(json.dumps({"machine": machine(), "data_set": data_set(), "args": {k: str(v) for k, v in vars(args).items()},
                                     "results": results, "summary": summary}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
