"""The per-action cost benchmark reports what it claims to (not how fast anything is).

A tiny run of every action against real server processes, the worker and a
Redis: each row must carry the documented fields with sane values, and the
Markdown table must have one row per action plus the mix.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from bench import actions, seeding
from chat.models import ApiToken
from chatsite import env

pytestmark = pytest.mark.django_db(transaction=True)


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def test_the_mix_weights_are_read_from_the_locustfile():
    weights = actions.mix_weights()
    assert set(weights) == {"unread", "switch", "scroll", "post", "read", "edit", "reconnect"}
    assert sum(weights.values()) == 100
    assert {a.mix for a in actions.ACTIONS if a.mix} == set(weights)


def test_unknown_actions_are_refused(capsys):
    with pytest.raises(SystemExit):
        actions.parse_args(["--actions", "post,dance"])
    assert "dance" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_a_tiny_run_of_every_action_reports_every_tier():
    seeding.load_seed(users=8, projects=1, rooms=3, messages=400, progress=False, log=lambda _: None)
    opts = actions.Options(users=6, rate=8.0, duration=1.5, warmup=0.5, idle=1.0, concurrency=4, no_seed=True, quiet=True)
    report = actions.run(opts, database_url=_database_url(), redis_url=env.REDIS_URL)

    assert not ApiToken.objects.filter(name=actions.TOKEN_NAME).exists()  # tokens are deleted at the end
    assert report["users"] == 6 and report["server_processes"] == 1
    assert report["deflate_offered"] and report["deflate_negotiated"] >= 6
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu_model"]
    assert report["code"]["commit"]
    assert report["idle"]["seconds"] >= 1.0
    rows = {r["action"]: r for r in report["actions"]}
    assert list(rows) == list(actions.ACTION_NAMES)
    for name, r in rows.items():
        assert r["done"] > 0 and r["errors"] == {}, (name, r["errors"])
        for key in ("server_cpu_ms", "worker_cpu_ms", "redis_cpu_ms", "postgres_cpu_ms", "generator_cpu_ms"):
            assert r[key] is not None and r[key] >= 0, (name, key)
        assert r["bytes_to_client"] > 0, name
        assert r["statements_sent"] is not None and r["redis_commands"] is not None
        if name != "typing":
            assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"], name
    # What each action must at least do on its way through the tiers.
    assert rows["post"]["statements_sent"] >= 1 and rows["post"]["redis_by_command"].get("publish", 0) >= 1
    assert rows["edit"]["statements_sent"] >= 1
    assert rows["unread"]["bytes_to_client"] > 200
    assert rows["ping"]["statements_sent"] == 0
    if report["pg_stat_statements"]:
        assert rows["post"]["pg_statements"] >= 1 and rows["post"]["pg_time_ms"] > 0
    else:
        assert report["pg_stat_statements_reason"]
    assert report["mix"]["stack_cpu_ms_per_action"] > 0

    table = actions.markdown(report)
    lines = table.splitlines()
    assert lines[0] == "**Command.**" and "**Latest.**" in table and report["code"]["commit"][:7] in table
    assert report["machine"]["cpu_model"] in table
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| action")]
    assert len(body) == len(actions.ACTION_NAMES) + 1  # every action and the mix
