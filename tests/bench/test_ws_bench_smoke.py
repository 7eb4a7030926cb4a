"""The WebSocket benchmark harness measures what it claims to (not how fast anything is).

A trivial load against real server processes: the harness's own accounting
must come out exact (expected deliveries, zero loss, every latency sample
present) and its report must carry the documented fields.
"""

from __future__ import annotations

import json

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from bench import reference_asgi, ws_bench
from chatsite import env
from chatsite.asgi import application as chat_application

pytestmark = pytest.mark.django_db(transaction=True)


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def test_expected_deliveries_count_every_subscriber_of_the_room():
    assert ws_bench.expected_deliveries({7: 20, 8: 1}, {7: 3, 8: 3, 9: 5}) == 63


def _run(target: str, stack: str | None, processes: int, sustainable: float, us_per_delivery: float) -> dict:
    step = {"lost": 0, "generator_kept_up": True, "server_cpu_us_per_delivery": us_per_delivery}
    return {
        "target": target, "stack": stack, "processes": processes, "steps": [step],
        "sustainable": {"deliveries_per_s": sustainable},
    }  # fmt: skip


def test_ours_is_compared_with_every_reference_stack():
    runs = [
        _run("reference", "tutorial", 1, 500.0, 300.0),
        _run("reference", "ours", 1, 5000.0, 120.0),
        _run("ours", None, 1, 10000.0, 80.0),
        _run("ours", None, 2, 12000.0, 90.0),
    ]
    got = [(r["reference_stack"], r["processes"], r["ratio"], r["cpu_efficiency_ratio"]) for r in ws_bench.reference_ratios(runs)]
    assert got == [("tutorial", 1, 20.0, 3.75), ("tutorial", 2, 24.0, 3.33), ("ours", 1, 2.0, 1.5), ("ours", 2, 2.4, 1.33)]


def test_an_unknown_reference_stack_is_refused(capsys):
    with pytest.raises(SystemExit):
        ws_bench.parse_args(["--reference-stack", "tutorial,bogus"])
    assert "--reference-stack" in capsys.readouterr().err


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert ws_bench.percentile(values, 50) == 50.0
    assert ws_bench.percentile(values, 99) == 99.0
    assert ws_bench.percentile([], 99) is None


async def _open(application, path: str, token: str | None) -> tuple[WebsocketCommunicator, bool]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    return communicator, connected


async def test_the_reference_route_is_served_by_the_benchmarks_application_only(make_user, make_token):
    token = await database_sync_to_async(lambda: make_token(make_user()))()

    ours, connected = await _open(chat_application, "/ws/reference/", token)
    assert not connected or (await ours.receive_output(timeout=5))["type"] == "websocket.close"
    await ours.disconnect()

    anonymous, connected = await _open(reference_asgi.application, "/ws/reference/", None)
    assert not connected  # the same authentication as /ws/
    await anonymous.disconnect()

    reference, connected = await _open(reference_asgi.application, "/ws/reference/", token)
    assert connected
    await reference.send_to(text_data=orjson.dumps({"type": "subscribe", "room": 7}).decode())
    assert orjson.loads(await reference.receive_from(timeout=5)) == {"type": "subscribed", "room": 7}
    await reference.disconnect()

    # Everything else is the project's application, unchanged.
    chat, connected = await _open(reference_asgi.application, "/ws/", token)
    assert connected
    await chat.disconnect()


def test_a_tiny_run_against_both_consumers_and_the_bare_server_loses_nothing_and_reports_every_field(tmp_path):
    opts = ws_bench.Options(
        rooms=2,
        clients_per_room=3,
        senders=1,
        rate=10.0,
        duration=2.0,
        drain=5.0,
        warmup=1.0,
        # Accounting only: a slow moment on a busy machine must neither fail
        # nor repeat the step (speed is the benchmark's business, not the test's).
        p99_limit_ms=60_000.0,
        confirm=0,
        target="both",
        bare=True,
        reference_stacks=["tutorial", "ours"],
        client_procs=1,
        connect_concurrency=10,
        connect_timeout=30.0,
        settings_module="chatsite.settings.test",
        quiet=True,
    )
    report = ws_bench.run(opts, database_url=_database_url(), redis_url=env.REDIS_URL)
    out = tmp_path / "report.json"
    ws_bench.write_report(report, out)
    loaded = json.loads(out.read_text())

    assert [(r["target"], r["stack"], r["server"], r["layer"], r["app"]) for r in loaded["runs"]] == [
        ("bare", None, "bare", "none (one process)", "bench.bare_broadcast"),  # the ceiling, first
        # the tutorial's deployment, channels_redis defaults
        ("reference", "tutorial", "daphne", "core", "bench.reference_asgi:application"),
        ("reference", "ours", "uvicorn", "pubsub", "bench.reference_asgi:application"),
        ("ours", None, "uvicorn", "pubsub", "chatsite.asgi:application"),
    ]
    for run in loaded["runs"]:
        assert run["sockets"] == {**run["sockets"], "requested": 6, "connected": 6, "failed": 0}
        (step,) = run["steps"]
        # One sender in the first room: 20 messages, each due to the 3 sockets of that room.
        assert step["planned"] == step["sent"] == 20
        assert step["expected"] == step["expected_check"] == 60
        assert step["delivered"] == 60
        assert step["lost"] == 0 and step["loss_pct"] == 0
        assert step["duplicates"] == 0 and step["errors"] == {} and step["disconnects"] == 0
        assert step["latency_ms"]["count"] == 60
        assert 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p99"] <= step["latency_ms"]["max"]
        for name in ("offered_deliveries_per_s", "deliveries_per_s", "sent_rate", "ok", "resources"):
            assert name in step
        assert {"server_cpu_pct", "server_rss_mb", "client_cpu_pct"} <= set(step["resources"])
    ours = loaded["runs"][3]["steps"][0]
    assert ours["ack_latency_ms"]["count"] == 20  # only our consumer acknowledges a send

    # Every client offered permessage-deflate; each server made its own choice.
    negotiated = [(r["server"], r["sockets"]["deflate_offered"], r["sockets"]["deflate_negotiated"]) for r in loaded["runs"]]
    ours_choice = 6 if env.WS_DEFLATE else 0
    assert negotiated == [("bare", True, 6), ("daphne", True, 0), ("uvicorn", True, ours_choice), ("uvicorn", True, ours_choice)]
    assert [r["label"] for r in loaded["bare_ratios"]] == ["reference (tutorial stack)", "reference (ours stack)", "ours"]
    for ratio in loaded["bare_ratios"]:
        assert ratio["ratio"] is not None and ratio["bare_deliveries_per_s"] > 0
