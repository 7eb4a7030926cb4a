"""The WebSocket benchmark does what browsers do, and its new steps count what they claim (not how fast anything is).

The load generator offers permessage-deflate as Chrome does and decodes what
comes back compressed; the bare ``websockets`` broadcast server (the ceiling
reference) speaks enough of the protocol for it, resume included; the
reconnect storm's exactly-once accounting catches a lost and a repeated
message; and tiny storm and big-room steps against our real server (with
PostgreSQL and Redis) report every figure they document.
"""

from __future__ import annotations

import asyncio
import time
from array import array

import orjson
import pytest
from django.conf import settings
from websockets.asyncio.client import connect

from bench import ws_bench
from bench.bare_broadcast import Rooms
from bench.ws_client import KEY_BITS, Worker, exactly_once
from bench.ws_servers import base_env, run_servers
from chatsite import env


def _key(worker: int, k: int) -> int:
    return (worker << KEY_BITS) | k


# -- exactly once (synthetic) ---------------------------------------------------------


def test_exactly_once_passes_when_every_socket_got_every_message_of_its_room_once():
    sent = {7: [_key(0, 1), _key(0, 2)], 8: [_key(1, 1)]}
    got = exactly_once(sent, [(7, [_key(0, 2), _key(0, 1)]), (7, [_key(0, 1), _key(0, 2)]), (8, [_key(1, 1)]), (9, [])])
    assert got["exactly_once"]
    assert (got["sockets"], got["expected"], got["delivered"], got["lost"], got["repeated"], got["unexpected"]) == (4, 5, 5, 0, 0, 0)


def test_exactly_once_detects_a_lost_and_a_repeated_message():
    sent = {7: [_key(0, 1), _key(0, 2), _key(0, 3)]}
    received = [
        (7, [_key(0, 1), _key(0, 2), _key(0, 3)]),  # complete
        (7, [_key(0, 1), _key(0, 3)]),  # lost 0.2 (dropped across the reconnect)
        (7, [_key(0, 1), _key(0, 2), _key(0, 2), _key(0, 3)]),  # 0.2 twice (live and replayed)
    ]
    got = exactly_once(sent, received)
    assert not got["exactly_once"]
    assert (got["expected"], got["delivered"], got["lost"], got["repeated"]) == (9, 8, 1, 1)
    assert got["lost_samples"] == [{"socket": 1, "room": 7, "message": "0.2"}]
    assert got["repeated_samples"] == [{"socket": 2, "room": 7, "message": "0.2", "times": 2}]


def test_exactly_once_flags_a_message_of_another_room():
    got = exactly_once({7: [_key(0, 1)], 8: [_key(0, 2)]}, [(7, [_key(0, 1), _key(0, 2)])])
    assert got["unexpected"] == 1 and got["lost"] == 0 and not got["exactly_once"]


def test_a_pre_storm_replay_counts_against_exactly_once():
    clean = {"sockets": 1, "storm_sockets_checked": 1, "expected": 1, "delivered": 1, "lost": 0, "repeated": 0, "unexpected": 0,
             "resyncs": 0, "disconnects": 0, "errors": {}, "error_samples": [], "lost_samples": [], "repeated_samples": [],
             "exactly_once": True, "latencies_ms": array("d", [1.0]).tobytes()}  # fmt: skip
    assert ws_bench.merge_exactly_once([{**clean, "stale": 0}, {**clean, "stale": 0}])["exactly_once"]
    merged = ws_bench.merge_exactly_once([{**clean, "stale": 0}, {**clean, "stale": 1}])
    assert not merged["exactly_once"] and merged["stale"] == 1 and merged["expected"] == 2


# -- plans and options ----------------------------------------------------------------


def test_big_room_bytes_per_join_are_probed_at_two_sizes():
    opts = ws_bench.Options(big_room=5000, big_room_probe_at=500, big_room_probe=20)
    assert ws_bench.big_room_phases(opts) == [("fill", 0, 480), ("probe", 480, 500), ("fill", 500, 4980), ("probe", 4980, 5000)]
    small = ws_bench.Options(big_room=100, big_room_probe_at=500, big_room_probe=20)
    assert ws_bench.big_room_phases(small) == [("fill", 0, 80), ("probe", 80, 100)]


def test_storm_senders_stay_and_every_storm_socket_is_marked():
    opts = ws_bench.Options(storm=10, senders=3, client_procs=2)
    plan = ws_bench.storm_plan(opts, [101, 102, 103, 104], [f"t{i}" for i in range(20)], [9001, 9002], "/ws/")
    specs = [s for worker in plan.specs for s in worker]
    assert sum(s["storm"] for s in specs) == 10
    assert sorted(s["room"] for s in specs if s["sender"]) == [101, 102, 103]
    assert not any(s["storm"] and s["sender"] for s in specs)
    assert sum(plan.senders_per_worker) == 3 and sum(plan.subscribers.values()) == 13


def test_deflate_is_offered_by_default_and_no_deflate_turns_it_off():
    assert ws_bench.parse_args([]).compression == "deflate"
    assert ws_bench.parse_args(["--no-deflate"]).compression == "none"
    opts = ws_bench.parse_args(["--bare", "--storm", "100", "--big-room", "50", "--big-room-rate", "3", "--no-load"])
    assert (opts.bare, opts.storm, opts.big_room, opts.big_room_rate, opts.load) == (True, 100, 50, 3.0, False)


def test_ratios_to_the_bare_server():
    def run(target, stack, processes, sustainable, us):
        step = {"lost": 0, "generator_kept_up": True, "server_cpu_us_per_delivery": us, "deliveries_per_s": sustainable}
        return {"target": target, "stack": stack, "processes": processes, "steps": [step],
                "sustainable": {"deliveries_per_s": sustainable, "first_failing_rate": 100.0}}  # fmt: skip

    runs = [run("bare", None, 1, 20000.0, 20.0), run("reference", "tutorial", 1, 1000.0, 400.0), run("ours", None, 2, 10000.0, 60.0)]
    got = [(r["label"], r["ratio"], r["cpu_per_delivery_vs_bare"], r["bare_capped"]) for r in ws_bench.bare_ratios(runs)]
    assert got == [("reference (tutorial stack)", 0.05, 20.0, False), ("ours", 0.5, 3.0, False)]
    assert ws_bench.bare_ratios(runs[1:]) == []


# -- the bare server ------------------------------------------------------------------


def test_bare_rooms_replay_after_last_id_and_ask_for_a_resync_when_history_fell_short():
    rooms = Rooms(history=3)
    ids = [orjson.loads(rooms.post(7, f"m{i}", f"c{i}")[1])["message"]["id"] for i in range(5)]
    rooms.post(8, "elsewhere", "c-8")
    missed, overflowed = rooms.subscribe(object(), 7, ids[2])  # type: ignore[arg-type]
    assert [orjson.loads(f)["message"]["body"] for f in missed] == ["m3", "m4"] and not overflowed
    assert rooms.subscribe(object(), 7, ids[0]) == ([], True)  # type: ignore[arg-type]
    assert rooms.subscribe(object(), 7, None) == ([], False)  # type: ignore[arg-type]


@pytest.fixture
def bare_url():
    with run_servers(server="bare", count=1, env=base_env()) as servers:
        yield f"ws://127.0.0.1:{servers[0].port}/ws/"


def _specs(url: str, rooms: list[int], per_room: int, *, senders: int = 1, storm: bool = False) -> list[dict]:
    specs = [
        {"idx": j, "room": rooms[j % len(rooms)], "url": url, "token": "ignored", "sender": False, "storm": storm}
        for j in range(per_room * len(rooms))
    ]
    for i in range(senders):  # extra sockets that send and never storm
        specs.append({"idx": len(specs), "room": rooms[i % len(rooms)], "url": url, "token": "ignored", "sender": True, "storm": False})
    return specs


def _setup(tag: str, specs: list[dict], *, deflate: bool) -> dict:
    return {"cmd": "setup", "tag": tag, "clients": specs, "concurrency": 10, "open_timeout": 10.0, "phase_timeout": 30.0,
            "retries": 0, "deflate": deflate}  # fmt: skip


async def _step_and_drain(worker: Worker, step: int, *, rate: float, duration: float, size: int) -> dict:
    sent = await worker.step({"cmd": "step", "step": step, "rate": rate, "start_at": time.time(), "duration": duration, "size": size})
    drained = await worker.drain({"cmd": "drain", "per_room": sent["per_room"], "drain_s": 10.0})
    return {**sent, **drained}


async def test_the_client_offers_deflate_like_chrome_and_decodes_compressed_frames(bare_url):
    worker = Worker(conn=None, worker_id=0)  # type: ignore[arg-type]
    try:
        setup = await worker.setup(_setup("deflate", _specs(bare_url, [1], 3), deflate=True))
        assert (setup["connected"], setup["deflate_negotiated"]) == (4, 4)
        offer = worker.clients[0].ws.request.headers["Sec-WebSocket-Extensions"]  # type: ignore[union-attr]
        assert offer == "permessage-deflate; client_max_window_bits"
        before = await worker.counters({"cmd": "counters"})
        # Large, repetitive bodies: compressed on the wire, decoded and parsed in full by every receiver.
        got = await _step_and_drain(worker, 0, rate=20.0, duration=1.0, size=8000)
        assert got["sent"] == 20 and got["expected"] == got["unique"] == 80 and got["duplicates"] == 0
        after = await worker.counters({"cmd": "counters"})
        text, wire = after["text_bytes"] - before["text_bytes"], after["wire_bytes"] - before["wire_bytes"]
        assert text > 80 * 8000 and wire < text / 10
    finally:
        await worker.close({"cmd": "close"})


async def test_without_deflate_nothing_is_negotiated_and_frames_arrive_as_they_are(bare_url):
    worker = Worker(conn=None, worker_id=0)  # type: ignore[arg-type]
    try:
        setup = await worker.setup(_setup("plain", _specs(bare_url, [1], 2), deflate=False))
        assert (setup["connected"], setup["deflate_negotiated"]) == (3, 0)
        assert "Sec-WebSocket-Extensions" not in worker.clients[0].ws.request.headers  # type: ignore[union-attr]
        before = await worker.counters({"cmd": "counters"})
        got = await _step_and_drain(worker, 0, rate=10.0, duration=1.0, size=4000)
        assert got["expected"] == got["unique"] == 30
        after = await worker.counters({"cmd": "counters"})
        assert after["wire_bytes"] - before["wire_bytes"] >= after["text_bytes"] - before["text_bytes"]
    finally:
        await worker.close({"cmd": "close"})


async def test_a_storm_against_the_bare_server_resumes_every_socket_exactly_once(bare_url):
    worker = Worker(conn=None, worker_id=0)  # type: ignore[arg-type]
    try:
        setup = await worker.setup(_setup("storm", _specs(bare_url, [1, 2], 4, senders=2, storm=True), deflate=True))
        assert setup["connected"] == 10
        pre = await _step_and_drain(worker, 0, rate=20.0, duration=0.5, size=100)
        assert pre["sent"] > 0 and pre["expected"] == pre["unique"]
        old_sockets = [c.ws for c in worker.clients if c.storm]
        started = await worker.storm_start(
            {"cmd": "storm_start", "step": 1, "start_at": time.time(), "rate": 20.0, "size": 100, "lead_s": 0.3,
             "max_seconds": 20.0, "timeout": 15.0, "open_timeout": 5.0, "retries": 1, "backoff_s": 0.2,
             "concurrency": 0, "deflate": True}
        )  # fmt: skip
        assert started == {"storm_sockets": 8, "senders": 2}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = await worker.storm_status({"cmd": "storm_status"})
            if status["dropped"] and status["done"]:
                break
            await asyncio.sleep(0.05)
        assert status == {"dropped": True, "live": 8, "failed": 0, "pending": 0, "done": True}
        await asyncio.sleep(0.3)
        stopped = await worker.storm_stop({"cmd": "storm_stop"})
        assert stopped["reconnected"] == 8 and stopped["failed"] == 0
        assert all(c.ws is not None and c.ws not in old_sockets for c in worker.clients if c.storm)  # new sockets
        assert len(array("d", stopped["reconnect_ms"])) == 8
        sent = sum(len(keys) for keys in stopped["keys"].values())
        assert sent >= 5  # the lead alone is 0.3 s at 20/s
        checked = await worker.storm_check({"cmd": "storm_check", "keys": stopped["keys"], "drain_s": 10.0, "settle_s": 0.3})
        assert checked["exactly_once"], checked
        assert checked["expected"] == checked["delivered"] == sent * 5  # 4 storm sockets + 1 sender per room
        assert (checked["lost"], checked["repeated"], checked["stale"], checked["resyncs"]) == (0, 0, 0, 0)
    finally:
        await worker.close({"cmd": "close"})


# -- ours: the storm and the big room, tiny, with PostgreSQL and Redis ---------------------


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_a_tiny_storm_and_big_room_against_ours_report_every_figure():
    opts = ws_bench.Options(
        rooms=2, clients_per_room=2, senders=2, load=False, duration=1.0, warmup=0.0, drain=10.0,
        storm=6, storm_rate=10.0, storm_pre=1.0, storm_lead=0.5, storm_tail=0.5, storm_timeout=60.0, storm_backoff=0.2,
        big_room=12, big_room_probe_at=6, big_room_probe=3, big_room_rate=4.0,
        p99_limit_ms=60_000.0, client_procs=1, connect_concurrency=10, connect_timeout=60.0,
        settings_module="chatsite.settings.test", quiet=True,
    )  # fmt: skip
    report = ws_bench.run(opts, database_url=_database_url(), redis_url=env.REDIS_URL)
    assert report["runs"] == [] and report["bare_ratios"] == []

    storm = report["storm"]
    assert storm["sockets"] == {**storm["sockets"], "requested": 8, "connected": 8, "failed": 0}
    assert storm["before"]["lost"] == 0 and storm["before"]["sent"] > 0
    s = storm["storm"]
    assert (s["dropped"], s["reconnected"], s["failed"]) == (6, 6, 0)
    assert s["all_live_s"] is not None and s["reconnect_ms"]["count"] == 6
    assert s["messages_during_storm"] > 0
    once = s["exactly_once"]
    assert once["exactly_once"], once
    assert once["lost"] == once["repeated"] == once["stale"] == once["resyncs"] == 0
    assert once["expected"] == once["delivered"] > 0
    for name in ("server_cpu_pct", "client_cpu_pct"):
        assert name in s["resources"] and name in storm["sockets"]["resources"]
    # The server decides: ours negotiates permessage-deflate exactly when its setting says so.
    assert s["deflate_negotiated"] == (6 if env.WS_DEFLATE else 0)

    big = report["big_room"]
    join = big["join"]
    assert (join["requested"], join["connected"], join["failed"]) == (12, 12, 0)
    assert [p["room_size"] for p in join["probes"]] == [6, 12]
    for probe in join["probes"]:
        assert probe["joined"] == 3 and probe["wire_bytes_per_join"] > 0 and "subscribed" in probe["by_type"]
    (step,) = big["steps"]
    assert step["sent"] == 4 and step["expected"] == step["delivered"] == 48 and step["lost"] == 0
    assert {"server_cpu_pct", "client_cpu_pct"} <= set(step["resources"])
    assert step["server_cpu_us_per_delivery"] is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_with_bare_the_big_room_runs_on_the_bare_server_too_in_the_same_run():
    opts = ws_bench.Options(
        rooms=2, clients_per_room=2, senders=2, load=False, bare=True, duration=1.0, warmup=0.0, drain=10.0,
        big_room=8, big_room_probe_at=4, big_room_probe=2, big_room_rate=4.0,
        p99_limit_ms=60_000.0, client_procs=1, connect_concurrency=10, connect_timeout=60.0,
        settings_module="chatsite.settings.test", quiet=True,
    )  # fmt: skip
    report = ws_bench.run(opts, database_url=_database_url(), redis_url=env.REDIS_URL)
    bare, ours = report["big_room_bare"], report["big_room"]
    assert (bare["target"], bare["processes"], ours["target"]) == ("bare", 1, "ours")
    for big in (bare, ours):
        assert big["join"]["connected"] == 8
        (step,) = big["steps"]
        assert step["expected"] == step["delivered"] == 32 and step["lost"] == 0
    assert "big room (bare x1): 8/8 joined" in ws_bench.summary(report)
