"""Search on `make run`'s embedded default (SQLite): the same endpoint and shape, LIKE matching.

Real commands in subprocesses with DATABASE_URL and REDIS_URL unset (as
tests/chatsite/test_embedded.py): migrate (the search index migration is a
no-op there), seed_demo, then the API through Django's test client.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.chatsite.test_embedded import _env
from tests.servers import ROOT

pytestmark = pytest.mark.embedded

SEARCH = """
import json, django
django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

client = Client()
client.force_login(get_user_model().objects.get(username="alice"))
answers = {"vendor": connection.vendor}
for q in ("STAGING", "staging deployed", "staging from:carol", "release -thursday", "staging has:link", "thursday before:2000-01-01"):
    response = client.get("/api/v1/projects/demo/search", {"q": q, "limit": 2})
    answers[q] = [response.status_code, response.json()]
print(json.dumps(answers))
"""


def test_search_works_on_the_embedded_default(tmp_path):
    env = _env(tmp_path)
    for args in (["migrate", "--no-input"], ["seed_demo"]):
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    run = subprocess.run([sys.executable, "-c", SEARCH], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    answers = json.loads(run.stdout.strip().splitlines()[-1])
    assert answers.pop("vendor") == "sqlite"

    status, page = answers["STAGING"]
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    bodies = [item["message"]["body"] for item in page["items"]]
    assert bodies == ["Deployed to staging. Please click around the room list when you have a minute.", "Staging is green, by the way."]
    assert page["items"][0]["room"] == {"id": page["items"][0]["message"]["room"], "slug": "general", "name": "general", "kind": "room"}
    assert "<mark>staging</mark>" in page["items"][0]["snippet"] and "<mark>Staging</mark>" in page["items"][1]["snippet"]

    status, page = answers["staging deployed"]
    assert [item["message"]["body"][:8] for item in page["items"]] == ["Deployed"]
    status, page = answers["staging from:carol"]
    assert [item["message"]["body"] for item in page["items"]] == ["Staging is green, by the way."]
    status, page = answers["release -thursday"]
    assert [item["message"]["body"] for item in page["items"]] == ["Morning! Coffee first, then the release notes."]
    status, error = answers["staging has:link"]
    assert status == 400 and error["code"] == "unsupported_filter"
    assert answers["thursday before:2000-01-01"] == [200, {"items": [], "next_cursor": None}]
