"""`make run`'s embedded default: SQLite, in-memory channel layer, local-memory cache.

Runs the real commands in subprocesses with DATABASE_URL and REDIS_URL unset:
migrate, seed_demo, then serves (chatsite.server) and has two demo users chat live
over WebSockets, logged in through the login page like a browser.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import websockets

from tests.servers import ROOT, free_port
from tests.waiting import wait_until

DEMO_PASSWORD = "embedded-demo-pw"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings.dev",
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        DEMO_PASSWORD=DEMO_PASSWORD,
        PYTHONPATH=str(ROOT),
    )
    return env


def _login(base: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=10)
    login_url = "/login/"
    page = client.get(login_url)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.post(
        login_url,
        data={"username": username, "password": DEMO_PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": base + login_url},
    )
    assert response.status_code == 302, response.text[:500]
    return client


def test_make_run_embedded_default_serves_live_chat(tmp_path):
    env = _env(tmp_path)
    for args in (["migrate", "--no-input"], ["seed_demo"]):
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "alice" in done.stdout and DEMO_PASSWORD in done.stdout

    settings_check = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; "
         "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'], s.CACHES['default']['BACKEND'])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )
    assert settings_check.stdout.split() == [
        "django.db.backends.sqlite3",
        "channels.layers.InMemoryChannelLayer",
        "django.core.cache.backends.locmem.LocMemCache",
    ]

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "chatsite.server", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def answering() -> bool:
            assert server.poll() is None, "the server exited"
            try:
                return httpx.get(base + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answering, timeout=30, interval=0.2, message="server did not start")
        health = httpx.get(base + "/healthz").json()
        assert health == {"status": "ok", "database": "ok", "redis": "disabled"}

        alice, bob = _login(base, "alice"), _login(base, "bob")
        room_page = alice.get("/p/demo/r/general/")
        assert room_page.status_code == 200 and "general" in room_page.text
        assert alice.get("/static/chat/chat.js").status_code == 200  # DEBUG serves static files
        rooms = alice.get("/api/v1/projects/demo/rooms").json()["items"]
        general = next(r for r in rooms if r["slug"] == "general")

        async def chat() -> None:
            def headers(client: httpx.Client) -> dict[str, str]:
                return {"Cookie": f"sessionid={client.cookies['sessionid']}", "Origin": base}

            a = await websockets.connect(f"ws://127.0.0.1:{port}/ws/", additional_headers=headers(alice))
            b = await websockets.connect(f"ws://127.0.0.1:{port}/ws/", additional_headers=headers(bob))

            async def events(ws, until: str) -> dict:
                while True:
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    for event in frame if isinstance(frame, list) else [frame]:
                        if event["type"] == until:
                            return event

            for ws in (a, b):
                await events(ws, "hello")
                await ws.send(orjson.dumps({"type": "subscribe", "room": general["id"]}).decode())
                await events(ws, "subscribed")
            await a.send(orjson.dumps({"type": "message.send", "room": general["id"], "body": "hi bob", "client_id": "e1"}).decode())
            ack = await events(a, "message.ack")
            got = await events(b, "message.new")
            assert got["message"]["id"] == ack["id"] and got["message"]["author"]["username"] == "alice"
            await a.close()
            await b.close()

        asyncio.run(chat())
    finally:
        server.terminate()
        server.wait(timeout=10)
