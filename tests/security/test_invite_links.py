"""Who may do what with invite links, on the pages and the JSON API (bearer token and session + CSRF).

The MATRIX is the specification (docs/SECURITY.md "Invite links"); outcomes
as in test_isolation.py: OK, FORBIDDEN (403: the user sees the project but may
not do this), HIDDEN (answered byte for byte like a project that does not
exist), LOGIN (pages: the login page with ``next=``; API: 401). Every case
also checks the database: denied actions change nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.test import Client

from projects import services as project_services
from projects.models import InviteLink, Membership
from tests.security.conftest import MISSING_ID, MISSING_SLUG, World, page_client, session_api_client

OK, FORBIDDEN, HIDDEN, LOGIN = "ok", "forbidden", "hidden", "login"
ROLES = ("anonymous", "non_member", "staff", "member", "admin", "owner")

# fmt: off
MATRIX: dict[str, tuple[str, ...]] = {
    # action              anonymous  non_member  staff   member     admin      owner
    "create_member_link": (LOGIN,    HIDDEN,     HIDDEN, FORBIDDEN, OK,        OK),
    "create_admin_link":  (LOGIN,    HIDDEN,     HIDDEN, FORBIDDEN, FORBIDDEN, OK),
    "list_links":         (LOGIN,    HIDDEN,     HIDDEN, FORBIDDEN, OK,        OK),
    "revoke_link":        (LOGIN,    HIDDEN,     HIDDEN, FORBIDDEN, OK,        OK),
    # the token is the permission: anyone logged in sees where it leads and joins
    "view_join_page":     (LOGIN,    OK,         OK,     OK,        OK,        OK),
    "join":               (LOGIN,    OK,         OK,     OK,        OK,        OK),
}
# fmt: on
PAGE_ACTIONS = set(MATRIX)
API_ACTIONS = set(MATRIX) - {"view_join_page"}


def cases(actions: set[str]) -> list[Any]:
    return [
        pytest.param(role, action, outcome, id=f"{action}-{role}")
        for action, outcomes in MATRIX.items()
        for role, outcome in zip(ROLES, outcomes)
        if action in actions
    ]


def test_matrix_covers_every_role_and_action() -> None:
    assert all(len(row) == len(ROLES) for row in MATRIX.values())


def user_of(world: World, role: str) -> Any:
    return world.project.created_by if role == "owner" else world.user(role)


def _link(world: World) -> tuple[InviteLink, str]:
    """A live member link to the world's project, made by its owner (one per test)."""
    if not hasattr(world, "link"):
        world.link = project_services.invite_link_create(project=world.project, by=world.project.created_by, max_uses=5)
    return world.link


def _member_before(world: World, role: str) -> bool:
    user = user_of(world, role)
    return user is not None and Membership.objects.filter(project=world.project, user=user).exists()


def _assert_writes(world: World, role: str, action: str, expected: str, *, was_member: bool) -> None:
    """Links and memberships changed exactly as the allowed action would, and not at all otherwise."""
    allowed = expected == OK
    link, _ = _link(world)
    made = InviteLink.objects.exclude(pk=link.pk)
    assert made.filter(role="member").exists() == (action == "create_member_link" and allowed)
    assert made.filter(role="admin").exists() == (action == "create_admin_link" and allowed)
    link.refresh_from_db()
    assert (link.revoked_at is not None) == (action == "revoke_link" and allowed)
    joined = action == "join" and allowed and not was_member
    assert link.uses == (1 if joined else 0)
    user = user_of(world, role)
    if user is not None:
        assert Membership.objects.filter(project=world.project, user=user).exists() == (was_member or joined)


# --- Pages --------------------------------------------------------------------


def _page_request(client: Client, world: World, action: str, *, missing: bool = False) -> Any:
    link, raw = _link(world)
    slug = MISSING_SLUG if missing else world.project.slug
    if action == "create_member_link":
        return client.post(f"/p/{slug}/invite-links/", {"role": "member", "expires_in_hours": "1"})
    if action == "create_admin_link":
        return client.post(f"/p/{slug}/invite-links/", {"role": "admin", "expires_in_hours": "1"})
    if action == "list_links":
        return client.get(f"/p/{slug}/")
    if action == "revoke_link":
        return client.post(f"/p/{slug}/invite-links/{link.id}/revoke/")
    if action == "view_join_page":
        return client.get(f"/join/{raw}/")
    if action == "join":
        return client.post(f"/join/{raw}/")
    raise AssertionError(action)


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "action", "expected"), cases(PAGE_ACTIONS))
def test_pages(world: World, role: str, action: str, expected: str) -> None:
    _link(world)
    was_member = _member_before(world, role)
    client = page_client(user_of(world, role))
    response = _page_request(client, world, action)

    if expected == LOGIN:
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")
    elif expected == HIDDEN:
        probe = _page_request(client, world, action, missing=True)
        assert response.status_code == 404
        assert (response.status_code, response.content) == (probe.status_code, probe.content)
    elif expected == FORBIDDEN:
        if action == "list_links":  # the project page itself is theirs to read, without the card
            assert response.status_code == 200 and 'id="invite-links"' not in response.content.decode()
        elif action == "create_admin_link" and role == "admin":  # offered no admin role: a form error
            assert response.status_code == 200 and "errorlist" in response.content.decode()
        else:
            assert response.status_code == 403
    else:
        body = response.content.decode()
        if action in ("create_member_link", "create_admin_link"):
            assert response.status_code == 200 and 'id="invite-link-url"' in body
        elif action == "list_links":
            assert response.status_code == 200 and f'data-link-id="{_link(world)[0].id}"' in body
        elif action == "view_join_page":
            assert response.status_code == 200
            assert ('id="join-form"' in body) == (not was_member)
            assert ("already a member" in body) == was_member
        else:
            assert response.status_code == 302
            if action == "join":
                assert response["Location"] == f"/p/{world.project.slug}/"
    _assert_writes(world, role, action, expected, was_member=was_member)


# --- JSON API -------------------------------------------------------------------

API = "/api/v1"


def _api_request(client: Client, headers: dict[str, str], world: World, action: str, *, missing: bool = False) -> Any:
    link, raw = _link(world)
    slug = MISSING_SLUG if missing else world.project.slug

    def send(method: str, path: str, payload: dict | None = None) -> Any:
        data = orjson.dumps(payload) if payload is not None else b""
        return getattr(client, method)(f"{API}{path}", data=data, content_type="application/json", headers=headers)

    if action == "create_member_link":
        return send("post", f"/projects/{slug}/invite-links", {"role": "member"})
    if action == "create_admin_link":
        return send("post", f"/projects/{slug}/invite-links", {"role": "admin"})
    if action == "list_links":
        return client.get(f"{API}/projects/{slug}/invite-links", headers=headers)
    if action == "revoke_link":
        return send("delete", f"/projects/{slug}/invite-links/{MISSING_ID if missing else link.id}")
    if action == "join":
        return send("post", "/invite-links/join", {"token": raw})
    raise AssertionError(action)


def _api_client(auth: str, world: World, role: str) -> tuple[Client, dict[str, str]]:
    user = user_of(world, role)
    if auth == "bearer":
        if user is None:
            return Client(), {}
        from chat.services import accounts as account_services

        return Client(), {"Authorization": f"Bearer {account_services.token_create(user=user)[1]}"}
    return session_api_client(user)


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
@pytest.mark.parametrize(("role", "action", "expected"), cases(API_ACTIONS))
def test_api(world: World, role: str, action: str, expected: str, auth: str) -> None:
    _link(world)
    was_member = _member_before(world, role)
    client, headers = _api_client(auth, world, role)
    response = _api_request(client, headers, world, action)

    if expected == LOGIN:
        assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
    elif expected == HIDDEN:
        probe = _api_request(client, headers, world, action, missing=True)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert response.content == probe.content
    elif expected == FORBIDDEN:
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
    else:
        status = {"create_member_link": 201, "create_admin_link": 201, "revoke_link": 204}.get(action, 200)
        if action == "join":
            status = 200 if was_member else 201
        assert response.status_code == status, response.content
        if action == "list_links":
            items = response.json()["items"]
            assert [i["id"] for i in items] == [_link(world)[0].id]
            assert _link(world)[1] not in response.content.decode()
    _assert_writes(world, role, action, expected, was_member=was_member)
