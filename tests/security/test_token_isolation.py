"""API tokens are their owner's alone: nobody else can list, revoke or learn of them.

In the style of test_isolation.py: another user's token id is answered
exactly (status and bytes) like an id that does not exist, on the API (bearer
and session + CSRF) and on the tokens page; nothing changes on a denied
revoke. Staff get nothing extra here either.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chat.models import ApiToken
from tests.security.conftest import MISSING_ID, World, session_api_client

API = "/api/v1"
VICTIM = "private_member"
CALLERS = ["non_member", "staff", "member", "admin"]


def _victim_token(world: World) -> ApiToken:
    return ApiToken.objects.get(user=world.user(VICTIM))


def _api(world: World, role: str, auth: str) -> tuple[Client, dict[str, str]]:
    if auth == "bearer":
        return Client(), {"Authorization": f"Bearer {world.tokens[role]}"}
    return session_api_client(world.user(role))


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
@pytest.mark.parametrize("role", CALLERS)
def test_api_lists_only_the_callers_own_tokens(world: World, role: str, auth: str) -> None:
    client, headers = _api(world, role, auth)
    response = client.get(f"{API}/auth/tokens", headers=headers)
    assert response.status_code == 200
    ids = [item["id"] for item in response.json()["items"]]
    assert ids == list(ApiToken.objects.filter(user=world.user(role)).order_by("-id").values_list("id", flat=True))
    assert _victim_token(world).id not in ids


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["bearer", "session"])
@pytest.mark.parametrize("role", CALLERS)
def test_api_cannot_revoke_anyone_elses_token(world: World, role: str, auth: str) -> None:
    client, headers = _api(world, role, auth)
    victim = _victim_token(world)
    denied = client.delete(f"{API}/auth/tokens/{victim.id}", headers=headers)
    probe = client.delete(f"{API}/auth/tokens/{MISSING_ID}", headers=headers)
    assert denied.status_code == 404
    assert (denied.status_code, denied.content) == (probe.status_code, probe.content)
    assert ApiToken.objects.filter(pk=victim.pk).exists()
    victim_client = Client(headers={"Authorization": f"Bearer {world.tokens[VICTIM]}"})
    assert victim_client.get(f"{API}/me").status_code == 200


@pytest.mark.django_db
def test_anonymous_callers_get_401_for_every_token_endpoint(world: World) -> None:
    victim = _victim_token(world)
    client = Client()
    for method, path in [
        ("get", "/auth/tokens"),
        ("post", "/auth/tokens"),
        ("delete", "/auth/token"),
        ("delete", f"/auth/tokens/{victim.id}"),
    ]:
        response = getattr(client, method)(f"{API}{path}", content_type="application/json")
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "not_authenticated"
    assert ApiToken.objects.filter(pk=victim.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", CALLERS)
def test_page_cannot_show_or_revoke_anyone_elses_token(world: World, role: str) -> None:
    victim = _victim_token(world)
    client = Client()
    client.force_login(world.user(role))
    page = client.get("/account/tokens/").content.decode()
    assert f'value="{victim.id}"' not in page
    denied = client.post("/account/tokens/revoke/", {"token": str(victim.id)})
    probe = client.post("/account/tokens/revoke/", {"token": str(MISSING_ID)})
    assert denied.status_code == 404
    assert (denied.status_code, denied.content) == (probe.status_code, probe.content)
    assert ApiToken.objects.filter(pk=victim.pk).exists()


@pytest.mark.django_db
def test_anonymous_page_requests_go_to_the_login(world: World) -> None:
    victim: Any = _victim_token(world)
    client = Client()
    for response in (client.get("/account/tokens/"), client.post("/account/tokens/revoke/", {"token": str(victim.id)})):
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")
    assert ApiToken.objects.filter(pk=victim.pk).exists()
