"""The WebSocket benchmark's reaction storm counts what it claims (not how fast anything is).

A socket keeps the summary with the largest version; convergence fails on a
stale or wrong summary; and a tiny storm against two real server processes
(PostgreSQL, Redis) is acknowledged in full, coalesced, and ends with every
socket holding the database's final state.
"""

from __future__ import annotations

from array import array

import orjson
import pytest
from django.conf import settings

from bench import ws_bench
from bench.ws_client import Client, Recorder, View, reaction_convergence, summary_of
from chatsite import env


def _event(message: int, version: int, reactions: list[dict]) -> bytes:
    return orjson.dumps({"type": "reaction", "room": 7, "message": message, "version": version, "reactions": reactions})


def _entry(emoji: str, user_ids: list[int]) -> dict:
    return {"emoji": emoji, "count": len(user_ids), "user_ids": user_ids, "users": []}


# -- summaries and convergence (synthetic) ---------------------------------------------


def test_a_summary_is_read_as_counts_and_people_and_a_wrong_count_is_malformed():
    assert summary_of([_entry("👍", [8, 3]), _entry("🎉", [3])]) == {"👍": (2, (3, 8)), "🎉": (1, (3,))}
    assert summary_of([]) == {}
    assert summary_of([{**_entry("👍", [8, 3]), "count": 3}]) is None
    assert summary_of([_entry("👍", [3]), _entry("👍", [8])]) is None


def test_a_socket_keeps_the_summary_with_the_largest_version_whatever_the_order():
    recorder = Recorder(tag="t")
    client = Client({"idx": 0, "room": 7, "url": "ws://127.0.0.1:1/ws/", "token": "x", "sender": False})
    recorder.on_text(client, _event(90, 200, [_entry("👍", [3, 8])]))
    recorder.on_text(client, _event(90, 100, [_entry("👍", [3])]))  # read earlier by another process, arrived later
    recorder.on_text(client, orjson.dumps([orjson.loads(_event(91, 50, []))]))  # batched with nothing else
    assert client.views[90].version == 200 and client.views[90].summary == {"👍": (2, (3, 8))}
    assert client.views[91].summary == {}
    assert (recorder.reaction_events, recorder.reaction_older, recorder.reaction_malformed) == (3, 1, 0)


def test_convergence_needs_every_message_of_the_room_at_its_final_state():
    final = {90: {"👍": (2, (3, 8))}, 91: {}}
    messages = {7: [90, 91], 8: [92]}
    last_ack = {90: 1_000_000_000, 91: 1_000_000_000, 92: 1_000_000_000}
    good = {90: View(5, {"👍": (2, (3, 8))}, 1_040_000_000), 91: View(6, {}, 1_010_000_000)}
    stale = {90: View(9, {"👍": (1, (3,))}, 1_050_000_000), 91: View(6, {}, 1_010_000_000)}  # newest, but not final
    wrong_people = {90: View(5, {"👍": (2, (3, 9))}, 1_040_000_000), 91: View(6, {}, 1_010_000_000)}
    missing = {90: View(5, {"👍": (2, (3, 8))}, 1_040_000_000)}
    got = reaction_convergence(
        [(7, good), (7, stale), (7, wrong_people), (7, missing), (9, {})], messages, final, last_ack
    )  # the socket in room 9 has nothing to converge on
    assert (got["sockets"], got["converged"]) == (4, 1)
    assert list(array("d", got["converge_ms"])) == [40.0]
    assert [s["socket"] for s in got["mismatch_samples"]] == [1, 2, 3]


# -- ours, tiny, two processes, with PostgreSQL and Redis --------------------------------


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_a_tiny_reaction_storm_on_two_processes_is_coalesced_and_converges_on_the_database():
    opts = ws_bench.Options(
        rooms=3, clients_per_room=3, senders=3, load=False, processes=[2], warmup=0.0, drain=10.0,
        reactions=True, reaction_rate=120.0, reaction_duration=1.5, reaction_messages=2, reaction_message_rate=4.0,
        reaction_deadline=10.0, client_procs=1, connect_concurrency=10, connect_timeout=60.0,
        settings_module="chatsite.settings.test", quiet=True,
    )  # fmt: skip
    report = ws_bench.run(opts, database_url=_database_url(), redis_url=env.REDIS_URL)
    run = report["reactions"]
    assert (run["processes"], run["rate_limit_reactions"]) == (2, "100000/60")
    assert run["sockets"] == {**run["sockets"], "requested": 9, "connected": 9, "failed": 0}
    assert len(run["messages"]) == 2 and len({m["room"] for m in run["messages"]}) == 2
    (step,) = run["steps"]

    # Every reaction sent was acknowledged, and each one changed something (a user toggles what it has).
    assert step["planned"] == step["sent"] == 180
    assert step["acked"] == step["changed"] == 180 and step["reaction_errors"] == 0 and step["errors"] == {}
    assert step["ack_latency_ms"]["count"] == 180 and step["acked_per_s"] > 0

    # Coalesced: 60 reactions/s on each message reach each socket of its room as far fewer events
    # (at most one per window per process); one event per reaction would make the ratio 1.
    events = step["events"]
    assert events["sockets"] == 6 and events["received"] > 0 and events["malformed"] == 0
    assert events["uncoalesced"] == 180 * 3
    assert events["coalescing_ratio"] > 2
    assert events["per_socket_per_s"] < events["reactions_per_socket_per_s"]
    assert events["bytes_per_socket_per_s"] > 0 and events["wire_bytes_per_socket_per_s"] > 0

    # Every socket of the two rooms ends on the database's final summary, counts and people.
    conv = step["convergence"]
    assert (conv["sockets"], conv["converged"]) == (6, 6), conv["mismatch_samples"]
    assert conv["within_deadline"] and conv["model_matches_database"] and conv["mismatch_samples"] == []
    assert conv["converge_ms"]["count"] == 6
    assert set(conv["final_state"]) == {m["id"] for m in run["messages"]}
    assert sum(n for counts in conv["final_state"].values() for n in counts.values()) > 0

    # Nothing else was lost meanwhile.
    traffic = step["message_traffic"]
    assert traffic["sent"] == 6 and traffic["expected"] == traffic["delivered"] == 18 and traffic["lost"] == 0
    assert step["server_cpu_ms_per_reaction"] is not None and step["client_cpu_ms_per_reaction"] is not None
    assert {"server_cpu_s", "client_cpu_s", "client_cpu_pct"} <= set(step["cpu"])
    assert step["ok"], ws_bench.reaction_text(step)
    assert "reactions x2: 120/s offered on 2 message(s)" in ws_bench.summary(report)


def test_reaction_options_parse():
    opts = ws_bench.parse_args(
        ["--no-load", "--reactions", "--reaction-rate", "300", "--reaction-duration", "20", "--reaction-messages", "4",
         "--reaction-message-rate", "2", "--reaction-deadline", "3"]
    )  # fmt: skip
    assert (opts.load, opts.reactions, opts.reaction_rate, opts.reaction_duration) == (False, True, 300.0, 20.0)
    assert (opts.reaction_messages, opts.reaction_message_rate, opts.reaction_deadline) == (4, 2.0, 3.0)
    assert not ws_bench.parse_args([]).reactions
