"""Web security basics: CSRF on every form and session write, the WebSocket Origin check,
escaping of user text, and the production settings (check --deploy, security headers,
secure cookies, CSP, secrets only from the environment)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client

from chat.services import messages as message_services
from chatsite import env
from chatsite.asgi import application
from chatsite.api import api
from projects import services as project_services
from projects.models import Invitation, InviteLink
from tests.conftest import PASSWORD
from tests.security.conftest import MISSING_ID, PRIVATE_ROOM_NAME, World
from tests.servers import server_env

ROOT = Path(__file__).resolve().parents[2]
FORM = re.compile(r'<form\b[^>]*\bmethod="post"[^>]*\baction="([^"]+)"', re.I)
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- CSRF on every page form ------------------------------------------------

# (page that shows the form, who looks at it, form action, valid-looking data)
FORMS = [
    ("/login/", None, "/login/", {"username": "member", "password": "wrong"}),
    ("/signup/", None, "/signup/", {"username": "someone", "password1": "a-Long-pass-42", "password2": "a-Long-pass-42"}),
    ("/", "admin", "/logout/", {}),
    ("/", "admin", "/", {"name": "Another project"}),
    ("/p/world/", "admin", "/p/world/rooms/", {"name": "csrf-room"}),
    ("/p/world/", "admin", "/p/world/dms/", {"users": "bystander"}),
    ("/p/world/", "admin", "/p/world/invite/", {"username": "newbie", "role": "member"}),
    ("/p/world/", "admin", "/p/world/leave/", {}),
    ("/p/world/", "admin", "/p/world/members/{id}/remove/", {}),
    ("/p/world/", "admin", "/p/world/invite-links/", {"role": "member", "expires_in_hours": "1"}),
    ("/p/world/", "admin", "/p/world/invite-links/{id}/revoke/", {}),
    ("/join/{token}/", "non_member", "/join/{token}/", {}),
    ("/", "non_member", "/invitations/{id}/accept/", {}),
    ("/", "non_member", "/invitations/{id}/decline/", {}),
    (f"/p/world/r/{PRIVATE_ROOM_NAME}/", "private_member", f"/p/world/r/{PRIVATE_ROOM_NAME}/members/", {"username": "bystander"}),
    (f"/p/world/r/{PRIVATE_ROOM_NAME}/", "private_member", f"/p/world/r/{PRIVATE_ROOM_NAME}/mute/", {"muted": "1"}),
    (f"/p/world/r/{PRIVATE_ROOM_NAME}/", "private_member", f"/p/world/r/{PRIVATE_ROOM_NAME}/leave/", {}),
    ("/account/notifications/", "member", "/account/notifications/", {"action": "settings", "quiet": "off"}),
    ("/account/profile/", "member", "/account/profile/", {"first_name": "Mem"}),
    ("/account/tokens/", "member", "/account/tokens/", {"name": "csrf-token"}),
    ("/account/tokens/", "member", "/account/tokens/revoke/", {"token": "987654321"}),
]


def _invite_link_token(world: World) -> str:
    """The raw token of an invite link to the world's project, made on first use (only its hash is stored)."""
    if not hasattr(world, "invite_link_token"):
        _, world.invite_link_token = project_services.invite_link_create(project=world.project, by=world.project.created_by)
    return world.invite_link_token


def _form_action(world: World, action: str) -> str:
    """``action`` with its ``{id}`` or ``{token}``: the member "bystander" to remove, the non-member's
    invitation or an invite link (made here)."""
    if "{token}" in action or "/invite-links/" in action:
        token = _invite_link_token(world)
        link_id = InviteLink.objects.get(token_hash=InviteLink.hash_token(token)).id
        return action.replace("{token}", token).replace("{id}", str(link_id))
    if "/invitations/" in action:
        invitation, _ = Invitation.objects.get_or_create(project=world.project, user=world.user("non_member"))
        return action.replace("{id}", str(invitation.id))
    return action.replace("{id}", str(world.project.memberships.get(user__username="bystander").user_id))


@pytest.mark.django_db
def test_every_post_form_on_the_pages_is_in_the_csrf_list(world: World) -> None:
    """The forms the pages actually render are exactly the ones tested below (any id standing for ``{id}``)."""
    found = set()
    for _, _, action, _ in FORMS:
        _form_action(world, action)  # the invitation the non-member's page shows
    for page, role, _, _ in FORMS:
        client = Client()
        if role:
            client.force_login(world.user(role))
        response = client.get(_form_action(world, page))
        assert response.status_code == 200, page
        found |= {
            re.sub(r"/\d+/", "/{id}/", re.sub(r"^/join/[^/]+/$", "/join/{token}/", action))
            for action in FORM.findall(response.content.decode())
        }
    assert found == {action for _, _, action, _ in FORMS}


@pytest.mark.django_db
@pytest.mark.parametrize(("page", "role", "action", "data"), FORMS, ids=[f[2] for f in FORMS])
def test_page_forms_refuse_a_post_without_the_csrf_token(world: World, page: str, role: str | None, action: str, data: dict) -> None:
    client = Client(enforce_csrf_checks=True)
    if role:
        client.force_login(world.user(role))
    action = _form_action(world, action)
    html = client.get(_form_action(world, page)).content.decode()
    token = CSRF_INPUT.search(html).group(1)

    assert client.post(action, data).status_code == 403
    assert client.post(action, {**data, "csrfmiddlewaretoken": "x" * 64}).status_code == 403
    # The same post with the page's token gets through (so the 403 above was the CSRF check).
    assert client.post(action, {**data, "csrfmiddlewaretoken": token}).status_code != 403


def _session_writes() -> list[tuple[str, str]]:
    schema = api.get_openapi_schema()
    return [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if method in ("post", "put", "patch", "delete") and not path.endswith("/auth/token")
    ]


def test_the_api_has_session_writes_to_check() -> None:
    assert len(_session_writes()) >= 8


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), _session_writes())
def test_session_api_writes_need_the_csrf_header(world: World, method: str, path: str) -> None:
    """Every write in the OpenAPI document: a logged-in browser without X-CSRFToken gets 403 csrf_failed."""
    url = (
        path.replace("{slug}", world.project.slug)
        .replace("{room_id}", str(world.public.id))
        .replace("{message_id}", str(world.public_messages[0].id))
        .replace("{user_id}", str(world.user("member").id))
        .replace("{invitation_id}", str(MISSING_ID))
        .replace("{link_id}", str(MISSING_ID))
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.user("admin"))
    assert client.get("/").status_code == 200  # sets the csrftoken cookie
    body = orjson.dumps({"body": "x", "name": "csrf-probe", "username": "newbie", "last_id": 0})
    send = getattr(client, method.lower())

    for headers in ({}, {"X-CSRFToken": "wrong" * 8}):
        refused = send(url, data=body, content_type="application/json", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["code"] == "csrf_failed"
    accepted = send(url, data=body, content_type="application/json", headers={"X-CSRFToken": client.cookies["csrftoken"].value})
    assert accepted.status_code != 403, accepted.content


# --- WebSocket Origin -------------------------------------------------------


async def _cookie_socket(
    cookie: bytes, origin: bytes | None, token: str | None = None, host: bytes = b"127.0.0.1:8000"
) -> tuple[bool, WebsocketCommunicator]:
    headers = [(b"cookie", cookie), (b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/", headers=headers)
    connected, _ = await communicator.connect()
    return connected, communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (b"http://127.0.0.1:8000", True),
        (b"http://localhost:8000", False),  # another host than the socket's own
        (b"http://127.0.0.1:9999", False),  # another port
        (b"https://127.0.0.1:8000", False),  # another scheme
        (b"http://127.0.0.1", False),  # the default port is another port
        (b"https://evil.example", False),
        (b"http://127.0.0.1.evil.example", False),
        (b"null", False),
        (None, False),
    ],
)
async def test_cookie_sockets_need_an_allowed_origin(world: World, origin: bytes | None, accepted: bool) -> None:
    """The Origin must be the socket's own (scheme, host and port), as Django's CSRF check wants for HTTP."""
    client = Client()
    await database_sync_to_async(client.force_login)(world.user("member"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    connected, communicator = await _cookie_socket(cookie, origin)
    try:
        assert connected == accepted
        if accepted:
            hello = orjson.loads(await communicator.receive_from(timeout=5))
            assert hello["type"] == "hello" and hello["user"]["username"] == "member"
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_bad_token_does_not_bypass_the_origin_check(world: World) -> None:
    """A forged Authorization header falls back to the cookie path, which checks Origin."""
    client = Client()
    await database_sync_to_async(client.force_login)(world.user("member"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    connected, communicator = await _cookie_socket(cookie, b"https://evil.example", token="not-a-token")
    assert not connected
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("host", "origin", "accepted"),
    [
        (b"evil.example", b"http://evil.example", False),  # a Host outside ALLOWED_HOSTS
        (b"localhost", b"http://localhost", True),
        (b"127.0.0.1:8000", b"https://chat.example", True),  # CSRF_TRUSTED_ORIGINS
        (b"127.0.0.1:8000", b"http://chat.example", False),  # trusted over https only
    ],
)
async def test_the_origin_rule_follows_allowed_hosts_and_trusted_origins(
    world: World, settings, host: bytes, origin: bytes, accepted: bool
) -> None:
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "chat.example"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example"]
    client = Client()
    await database_sync_to_async(client.force_login)(world.user("member"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    connected, communicator = await _cookie_socket(cookie, origin, host=host)
    assert connected == accepted
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_secure_socket_needs_an_https_origin(world: World) -> None:
    client = Client()
    await database_sync_to_async(client.force_login)(world.user("member"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"cookie", cookie), (b"host", b"localhost"), (b"origin", b"https://localhost")]
    communicator = WebsocketCommunicator(application, "/ws/", headers=headers)
    communicator.scope["scheme"] = "wss"
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()


# --- Escaping ---------------------------------------------------------------

HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]


@pytest.mark.django_db
def test_message_bodies_and_room_text_are_escaped_on_the_room_page(world: World, make_user) -> None:
    author = world.user("member")
    for body in HOSTILE:
        message_services.message_create(room=world.public, author=author, body=body)
    world.public.topic = '</script><script>alert("topic")</script>'
    world.public.save(update_fields=["topic"])
    author.first_name = "<b onmouseover=alert(2)>"
    author.save(update_fields=["first_name"])

    html = Client()
    html.force_login(world.user("member"))
    page = html.get(f"/p/world/r/{world.public.slug}/").content.decode()

    for raw in [*HOSTILE, "<b onmouseover", '<script>alert("topic")']:
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b onmouseover=alert(2)&gt;" in page
    # The only <script> elements are the JSON configuration (a data block), the module and the search script.
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts == [
        '<script id="chat-config" type="application/json">',
        '<script type="module" src="/static/chat/chat.js">',
        '<script defer src="/static/chat/search.js">',
    ]


def test_templates_need_no_inline_script_or_style() -> None:
    """What lets the CSP forbid inline scripts and styles: no inline code anywhere in the templates."""
    offenders = []
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            if "src=" not in tag and 'type="application/json"' not in tag:
                offenders.append(f"{template.name}: {tag}")
        offenders += [f"{template.name}: {m}" for m in re.findall(r"\son[a-z]+\s*=", text)]
        offenders += [f"{template.name}: {m}" for m in re.findall(r"<style\b|\sstyle\s*=", text)]
        offenders += [f"{template.name}: javascript: URL" for _ in re.findall(r"javascript:", text, re.I)]
    assert offenders == []


# --- Production settings ----------------------------------------------------


def production_env(**overrides: str) -> dict[str, str]:
    """deploy/env.example with a real secret, pointed at this run's PostgreSQL and Redis."""
    values: dict[str, str] = {}
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name] = value
    assert "REPLACE-ME" in values["SECRET_KEY"]
    test_env = server_env()
    values.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=test_env["DATABASE_URL"],
        REDIS_URL=env.REDIS_URL,
    )
    values.update(overrides)
    base = {k: v for k, v in os.environ.items() if k not in values and not k.startswith(("DJANGO_", "SECURE_", "DEBUG"))}
    return {**base, **{k: v for k, v in values.items() if v is not None}, "DJANGO_SETTINGS_MODULE": "chatsite.settings.production"}


def run(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)


def test_check_deploy_passes_with_the_example_environment() -> None:
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env())
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_passes_with_the_production_defaults() -> None:
    environ = production_env()
    environ.pop("SECURE_SSL_REDIRECT", None)
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], environ)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    environ = production_env()
    del environ["SECRET_KEY"]
    result = run([sys.executable, "manage.py", "check"], environ)
    assert result.returncode != 0
    assert "SECRET_KEY must be set in production" in result.stderr


def test_production_forces_debug_off() -> None:
    probe = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    result = run([sys.executable, "-c", probe], production_env(DEBUG="true"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


# Runs in a process with the production settings: a login and a few requests
# through Django's test client, printed as JSON.
PROBE = r"""
import json, os, django
django.setup()
from django.test import Client

def dump(response):
    return {
        "status": response.status_code,
        "headers": {k.lower(): v for k, v in response.headers.items()},
        "cookies": {
            name: {"secure": bool(m["secure"]), "httponly": bool(m["httponly"]), "samesite": m["samesite"]}
            for name, m in response.cookies.items()
        },
    }

client = Client(HTTP_HOST="localhost")
out = {
    "plain_http": dump(client.get("/api/v1/me")),
    "healthz": dump(client.get("/healthz", secure=True)),
    "login": dump(client.post("/login/", {"username": os.environ["PROBE_USER"], "password": os.environ["PROBE_PASSWORD"]}, secure=True)),
    "api": dump(client.get("/api/v1/me", secure=True)),
}
print("PROBE " + json.dumps(out))
"""


@pytest.fixture
def production_responses(transactional_db, make_user) -> dict[str, Any]:
    user = make_user("prod-user")
    # Hashed with a hasher the production settings know (the test settings use MD5).
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, salt="saltsaltsalt", iterations=1000)
    user.save(update_fields=["password"])
    environ = production_env(PROBE_USER="prod-user", PROBE_PASSWORD=PASSWORD)
    environ.pop("SECURE_SSL_REDIRECT", None)  # the production default: redirect to HTTPS
    result = run([sys.executable, "-c", PROBE], environ)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(line[len("PROBE ") :])


def test_production_redirects_plain_http_and_sends_security_headers(production_responses: dict[str, Any]) -> None:
    plain = production_responses["plain_http"]
    assert plain["status"] == 301 and plain["headers"]["location"].startswith("https://localhost/")
    for name in ("healthz", "login", "api"):
        headers = production_responses[name]["headers"]
        assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cross-origin-opener-policy"] == "same-origin"


def test_production_cookies_are_secure(production_responses: dict[str, Any]) -> None:
    login = production_responses["login"]
    assert login["status"] == 302, login
    cookies = login["cookies"]
    assert cookies["sessionid"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert cookies["csrftoken"]["secure"] is True
    assert cookies["csrftoken"]["samesite"] == "Lax"


def _csp(headers: dict[str, str]) -> dict[str, list[str]]:
    policy = headers.get("content-security-policy", "")
    return {
        parts[0]: parts[1:]
        for parts in (directive.split() for directive in policy.split(";"))
        if parts
    }


def test_production_sends_a_content_security_policy(production_responses: dict[str, Any]) -> None:
    """Own static JS/CSS, same-origin fetch and WebSocket, no inline code, no framing, no plugins."""
    for name in ("healthz", "login", "api"):
        policy = _csp(production_responses[name]["headers"])
        assert policy, f"no Content-Security-Policy on {name}"
        assert policy["default-src"] == ["'self'"]
        for directive in ("script-src", "style-src"):
            sources = policy.get(directive, policy["default-src"])
            assert "'self'" in sources
            assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:"} & set(sources), (directive, sources)
        assert policy["connect-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert policy["base-uri"] == ["'none'"]
        assert policy["form-action"] == ["'self'"]
