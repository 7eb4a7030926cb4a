"""Static files as production serves them: collectstatic with whitenoise's storage, whitenoise's middleware.

The production settings module needs its secrets, so one subprocess loads it
(with placeholder values) and reports its MIDDLEWARE, STORAGES and
WHITENOISE_MAX_AGE; the tests run the real collectstatic into a temporary
STATIC_ROOT with exactly those settings.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import brotli
import pytest
from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.management import call_command
from django.test import Client, override_settings

SOURCE = Path(settings.BASE_DIR) / "static" / "chat" / "chat.js"
TEN_YEARS = 10 * 365 * 24 * 60 * 60


@pytest.fixture(scope="module")
def production() -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings.production",
        "SECRET_KEY": "placeholder-for-a-settings-test",
    }
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'MIDDLEWARE': s.MIDDLEWARE, 'STORAGES': s.STORAGES, "
        "'WHITENOISE_MAX_AGE': s.WHITENOISE_MAX_AGE}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_production_settings_wire_whitenoise(production):
    middleware = production["MIDDLEWARE"]
    assert production["STORAGES"]["staticfiles"]["BACKEND"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    static = middleware.index("whitenoise.middleware.WhiteNoiseMiddleware")
    assert middleware[static - 1] == "django.middleware.security.SecurityMiddleware"
    # Before compression (files come pre-compressed) and before sessions.
    assert static < middleware.index("perf.compression.CompressionMiddleware")
    assert static < middleware.index("django.contrib.sessions.middleware.SessionMiddleware")
    assert production["WHITENOISE_MAX_AGE"] == 60


@pytest.fixture(scope="module")
def collected(production, tmp_path_factory):
    """collectstatic into a temporary STATIC_ROOT with the production storage and middleware.

    Only the project's own static folder is collected: the admin's hundreds of
    files would add a minute of brotli at quality 11 and test nothing more.
    """
    root = tmp_path_factory.mktemp("static_root")
    with override_settings(
        STATIC_ROOT=root,
        STATICFILES_FINDERS=["django.contrib.staticfiles.finders.FileSystemFinder"],
        STORAGES=production["STORAGES"],
        MIDDLEWARE=production["MIDDLEWARE"],
        WHITENOISE_MAX_AGE=production["WHITENOISE_MAX_AGE"],
    ):
        call_command("collectstatic", interactive=False, verbosity=0)
        yield root


def fetch(url: str, accept: str):
    """A GET through Django's handler, as the server runs it; its streamed body read whole into ``.body``."""
    response = Client().get(url, headers={"Accept-Encoding": accept})
    response.body = b"".join(response.streaming_content) if response.streaming else response.content
    return response


def hashed_url() -> str:
    url = staticfiles_storage.url("chat/chat.js")
    assert re.fullmatch(r"/static/chat/chat\.[0-9a-f]{12}\.js", url), url
    return url


def test_collectstatic_writes_hashed_and_precompressed_files(collected):
    name = hashed_url().removeprefix("/static/")
    original = SOURCE.read_bytes()
    assert (collected / name).read_bytes() == original
    assert brotli.decompress((collected / f"{name}.br").read_bytes()) == original
    assert gzip.decompress((collected / f"{name}.gz").read_bytes()) == original
    assert json.loads((collected / "staticfiles.json").read_text())["paths"]["chat/chat.js"] == name


@pytest.mark.parametrize("accept,coding", [("gzip, deflate, br, zstd", "br"), ("gzip", "gzip"), ("", None)])
def test_hashed_file_is_immutable_and_precompressed(collected, accept, coding):
    url = hashed_url()
    response = fetch(url, accept)
    assert response.status_code == 200
    assert response["Cache-Control"] == f"max-age={TEN_YEARS}, public, immutable"
    assert response.headers.get("Content-Encoding") == coding
    body = response.body
    if coding == "br":
        assert body == (collected / f"{url.removeprefix('/static/')}.br").read_bytes()
        body = brotli.decompress(body)
    elif coding == "gzip":
        body = gzip.decompress(body)
    assert body == SOURCE.read_bytes()
    assert "Accept-Encoding" in response["Vary"]
    assert response["Content-Type"].startswith("text/javascript")
    # Served before sessions: an asset never sets or reads a cookie.
    assert not response.cookies and "Cookie" not in response["Vary"]


def test_plain_name_gets_the_short_max_age(collected):
    response = fetch("/static/chat/chat.js", "br")
    assert response.status_code == 200
    assert response["Cache-Control"] == "max-age=60, public"
    assert "immutable" not in response["Cache-Control"]
    assert brotli.decompress(response.body) == SOURCE.read_bytes()


def test_unknown_static_path_falls_through(collected):
    assert fetch("/static/chat/nope.js", "").status_code == 404


@pytest.mark.django_db
def test_pages_link_the_hashed_names(collected, chat_world):
    client = Client()
    client.force_login(chat_world["member"])
    html = client.get("/p/world/r/general/").content.decode()
    assert hashed_url() in html
    assert staticfiles_storage.url("chat/chat.css") in html


def test_served_whole_with_its_length_and_to_head_requests(collected):
    url = hashed_url()
    client = Client()
    response = client.get(url, headers={"Accept-Encoding": "br"})
    head = client.head(url, headers={"Accept-Encoding": "br"})
    assert response.status_code == 200 and response["Content-Encoding"] == "br"
    assert response["Cache-Control"] == f"max-age={TEN_YEARS}, public, immutable"
    body = b"".join(response.streaming_content)
    assert brotli.decompress(body) == SOURCE.read_bytes()
    assert int(response["Content-Length"]) == len(body)
    assert head.status_code == 200
