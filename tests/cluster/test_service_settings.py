"""What REDIS_SENTINELS and DATABASE_REPLICA_URL change in the settings, and that without them nothing does.

Each case loads the real settings in a fresh process with its own
environment (settings are read once per process).
"""

from __future__ import annotations

import json
import subprocess
import sys

from django.conf import settings

from chatsite import env
from tests.servers import ROOT, server_env

SHOW = """
import json, django
django.setup()
from django.conf import settings
cache = settings.CACHES["default"]["OPTIONS"]
print(json.dumps({
    "routers": list(getattr(settings, "DATABASE_ROUTERS", [])),
    "aliases": sorted(settings.DATABASES),
    "factory": cache.get("CONNECTION_FACTORY"),
    "sentinels": cache.get("SENTINELS"),
    "location": settings.CACHES["default"]["LOCATION"],
    "layer_hosts": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"],
    "mirror": settings.DATABASES.get("replica", {}).get("TEST", {}).get("MIRROR"),
}, default=str))
"""


def load(**extra: str) -> dict:
    environ = server_env(**extra)
    done = subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_the_new_settings_everything_is_as_before():
    shown = load(REDIS_SENTINELS="", DATABASE_REPLICA_URL="")
    assert shown["routers"] == [] and shown["aliases"] == ["default"]
    assert shown["factory"] == "perf.redis.SharedClientConnectionFactory" and shown["sentinels"] is None
    assert shown["location"] == env.REDIS_URL
    assert shown["layer_hosts"] == [env.REDIS_URL]


def test_with_them_redis_is_found_through_the_sentinels_and_a_replica_alias_is_routed():
    db = settings.DATABASES["default"]
    replica = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    shown = load(REDIS_URL="redis://chat/3", REDIS_SENTINELS="127.0.0.1:26001,127.0.0.1:26002", DATABASE_REPLICA_URL=replica)
    assert shown["routers"] == ["perf.replica.ReplicaRouter"] and shown["aliases"] == ["default", "replica"]
    assert shown["mirror"] == "default"  # test runs have one database
    assert shown["factory"] == "perf.redis.SharedSentinelConnectionFactory"
    assert shown["sentinels"] == [["127.0.0.1", 26001], ["127.0.0.1", 26002]]
    (host,) = shown["layer_hosts"]
    assert host["master_name"] == "chat" and host["db"] == 3
    assert host["sentinels"] == [["127.0.0.1", 26001], ["127.0.0.1", 26002]]


READ_FROM_A_NON_STANDBY = """
import json, django
django.setup()
from perf import replica
from chat.models import Room

@replica.may_lag
def read():
    list(Room.objects.all()[:1])
    return replica.current_alias()

alias, again = read(), read()
samples = {tuple(sorted(s.labels.items())): s.value for s in replica.REPLICA_BLOCKS.collect()[0].samples if s.name.endswith("_total")}
print(json.dumps({"alias": alias, "again": again, "counts": [[dict(k), v] for k, v in samples.items()]}))
"""


def test_a_replica_that_is_not_a_standby_is_never_read_from(db):
    """DATABASE_REPLICA_URL pointing at a primary (a promoted standby, a mistake): every read stays on DATABASE_URL."""
    db_settings = settings.DATABASES["default"]
    url = f"postgres://{db_settings['USER']}@{db_settings['HOST']}:{db_settings['PORT']}/{db_settings['NAME']}"
    environ = server_env(DATABASE_REPLICA_URL=url)
    done = subprocess.run([sys.executable, "-c", READ_FROM_A_NON_STANDBY], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["alias"] == "default" and shown["again"] == "default"
    # The first block found it is no standby; the second did not ask it again (DATABASE_REPLICA_RETRY).
    reasons = {(labels["server"], labels["reason"]): value for labels, value in shown["counts"]}
    assert reasons.get(("primary", "not_standby")) == 1 and reasons.get(("primary", "skipped")) == 1, reasons
