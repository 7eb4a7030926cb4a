"""API tokens: listing, creating and revoking them over the API and on the tokens page.

Every revocation goes through chat.services.accounts.token_revoke; a revoked token
stops working at the next request (its cached lookup is dropped on commit).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.test import Client

from chat.models import ApiToken
from chat.services import accounts as account_services
from chatsite.errors import InvalidInput, NotFound

API = "/api/v1"


def bearer(raw: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {raw}"})


def session(user: Any) -> tuple[Client, dict[str, str]]:
    """A logged-in browser with CSRF checks on, and the header its JavaScript sends on writes."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    request = HttpRequest()
    token = get_token(request)
    client.cookies[settings.CSRF_COOKIE_NAME] = request.META["CSRF_COOKIE"]
    return client, {"X-CSRFToken": token}


def works(raw: str) -> bool:
    return bearer(raw).get(f"{API}/me").status_code == 200


# --- Service ----------------------------------------------------------------


def test_token_create_names_and_validates(make_user):
    user = make_user()
    assert account_services.token_create(user=user, name="  ci  ")[0].name == "ci"
    assert account_services.token_create(user=user, name=" ")[0].name == "api"
    assert account_services.token_create(user=user, name="x" * 100)[0].name == "x" * 100
    for bad in ("x" * 101, "nul\x00"):
        with pytest.raises(InvalidInput) as raised:
            account_services.token_create(user=user, name=bad)
        assert raised.value.code == "invalid_name"
    assert ApiToken.objects.filter(user=user).count() == 3


def test_token_revoke_is_for_the_owner_only(make_user, django_capture_on_commit_callbacks):
    owner, other = make_user(), make_user()
    token, raw = account_services.token_create(user=owner)
    assert works(raw)  # the lookup is now cached
    with pytest.raises(NotFound):
        account_services.token_revoke(token=token, by=other)
    assert works(raw)
    with django_capture_on_commit_callbacks(execute=True):
        account_services.token_revoke(token=token, by=owner)
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    assert not works(raw)


# --- DELETE /auth/token -----------------------------------------------------


def test_delete_auth_token_revokes_the_presented_token_only(make_user, make_token):
    user = make_user()
    presented, kept = make_token(user), make_token(user)
    response = bearer(presented).delete(f"{API}/auth/token")
    assert response.status_code == 204 and response.content == b""
    assert not works(presented)
    assert works(kept)
    assert ApiToken.objects.filter(user=user).count() == 1
    # The revoked token now authenticates nothing, this endpoint included.
    again = bearer(presented).delete(f"{API}/auth/token")
    assert again.status_code == 401 and again.json()["code"] == "not_authenticated"


def test_delete_auth_token_with_a_session_is_400(make_user, make_token):
    user = make_user()
    raw = make_token(user)
    client, headers = session(user)
    response = client.delete(f"{API}/auth/token", headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "no_bearer_token"
    assert works(raw)


def test_delete_auth_token_with_a_session_and_someone_elses_token_revokes_nothing(make_user, make_token):
    user, other = make_user(), make_user()
    others = make_token(other)
    other.is_active = False  # their token no longer authenticates, so the session does
    other.save(update_fields=["is_active"])
    client, headers = session(user)
    response = client.delete(f"{API}/auth/token", headers={**headers, "Authorization": f"Bearer {others}"})
    assert response.status_code == 400 and response.json()["code"] == "no_bearer_token"
    assert ApiToken.objects.filter(user=other).count() == 1


# --- GET /auth/tokens ---------------------------------------------------------


def test_token_list_shows_own_tokens_newest_first_without_secrets(make_user):
    user, other = make_user(), make_user()
    made = [account_services.token_create(user=user, name=f"t{i}") for i in range(3)]
    account_services.token_create(user=other, name="theirs")
    response = bearer(made[0][1]).get(f"{API}/auth/tokens")
    assert response.status_code == 200
    body = response.json()
    assert [item["name"] for item in body["items"]] == ["t2", "t1", "t0"]
    assert body["next_cursor"] is None
    first = body["items"][0]
    assert set(first) == {"id", "name", "created_at", "last_used_at"}
    assert first["id"] == made[2][0].id and first["created_at"] == made[2][0].created_at.isoformat()
    for _, raw in made:
        assert raw not in response.content.decode()
    assert made[0][0].key_hash not in response.content.decode()


def test_token_list_pages_and_selects_fields(make_user):
    user = make_user()
    raw = account_services.token_create(user=user, name="auth")[1]
    for i in range(4):
        account_services.token_create(user=user, name=f"t{i}")
    client = bearer(raw)
    seen, cursor = [], None
    while True:
        query = f"?limit=2&fields=id,name&cursor={cursor}" if cursor else "?limit=2&fields=id,name"
        page = client.get(f"{API}/auth/tokens{query}").json()
        assert all(set(item) == {"id", "name"} for item in page["items"])
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["t3", "t2", "t1", "t0", "auth"]
    assert client.get(f"{API}/auth/tokens?cursor=nope").json()["code"] == "invalid_cursor"
    assert client.get(f"{API}/auth/tokens?fields=token").json()["code"] == "invalid_fields"


def test_token_list_needs_authentication():
    response = Client().get(f"{API}/auth/tokens")
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"


# --- POST /auth/tokens --------------------------------------------------------


def test_a_session_creates_a_named_token_shown_once(make_user):
    user = make_user()
    client, headers = session(user)
    response = client.post(
        f"{API}/auth/tokens", data=orjson.dumps({"name": "laptop"}), content_type="application/json", headers=headers
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "created_at", "last_used_at", "token"}
    assert body["name"] == "laptop" and body["last_used_at"] is None
    assert works(body["token"])
    listed = client.get(f"{API}/auth/tokens").json()["items"]
    assert listed == [{k: v for k, v in body.items() if k != "token"}]


def test_a_bearer_token_cannot_create_tokens(make_user, make_token):
    user = make_user()
    raw = make_token(user)
    response = bearer(raw).post(f"{API}/auth/tokens", data=orjson.dumps({"name": "more"}), content_type="application/json")
    assert response.status_code == 403 and response.json()["code"] == "session_required"
    assert ApiToken.objects.filter(user=user).count() == 1


def test_token_create_rejects_bad_names_and_counts_against_the_token_limit(make_user, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "token": "1/300"}
    client, headers = session(make_user())

    def create(name: Any) -> Any:
        return client.post(f"{API}/auth/tokens", data=orjson.dumps({"name": name}), content_type="application/json", headers=headers)

    assert create("x" * 101).json()["code"] == "invalid_name"
    assert create(5).status_code == 422
    limited = create("ok")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"


# --- DELETE /auth/tokens/{id} --------------------------------------------------


def test_delete_a_token_by_id(make_user, make_token):
    user = make_user()
    raw = make_token(user)
    victim, victim_raw = account_services.token_create(user=user, name="old")
    client = bearer(raw)
    assert client.delete(f"{API}/auth/tokens/{victim.id}").status_code == 204
    assert not works(victim_raw) and works(raw)
    gone = client.delete(f"{API}/auth/tokens/{victim.id}")
    assert gone.status_code == 404 and gone.json() == {"detail": "Token not found.", "code": "not_found"}


@pytest.mark.parametrize("token_id", ["0", "-1", str(2**63), str(2**70)])
def test_delete_odd_token_ids_is_404(make_user, make_token, token_id):
    response = bearer(make_token(make_user())).delete(f"{API}/auth/tokens/{token_id}")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_a_session_revokes_its_tokens_by_id_with_csrf(make_user, make_token):
    user = make_user()
    token, raw = account_services.token_create(user=user, name="script")
    client, headers = session(user)
    refused = client.delete(f"{API}/auth/tokens/{token.id}")
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
    assert client.delete(f"{API}/auth/tokens/{token.id}", headers=headers).status_code == 204
    assert not works(raw)


# --- The tokens page ------------------------------------------------------------


def page_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_tokens_page_needs_login():
    response = Client().get("/account/tokens/")
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_header_links_to_the_tokens_page(make_user):
    assert 'href="/account/tokens/"' in page_client(make_user()).get("/").content.decode()
    assert 'href="/account/tokens/"' not in Client().get("/login/").content.decode()


def test_tokens_page_lists_own_tokens_with_revoke_buttons(make_user):
    user, other = make_user(), make_user()
    mine = account_services.token_create(user=user, name="mine-token")[0]
    account_services.token_create(user=other, name="their-token")
    page = page_client(user).get("/account/tokens/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "mine-token" in html and "their-token" not in html
    assert f'name="token" value="{mine.id}"' in html
    assert mine.key_hash not in html


def test_tokens_page_creates_a_token_and_shows_the_key_once(make_user):
    user = make_user()
    client = page_client(user)
    response = client.post("/account/tokens/", {"name": "deploy bot"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = re.search(r'<code class="token-key">([^<]+)</code>', response.content.decode()).group(1)
    assert works(raw)
    assert ApiToken.objects.get(user=user).name == "deploy bot"
    # Never again: the page lists the token, not its key.
    again = client.get("/account/tokens/").content.decode()
    assert "deploy bot" in again and raw not in again


def test_tokens_page_form_errors(make_user, settings):
    client = page_client(make_user())
    too_long = client.post("/account/tokens/", {"name": "x" * 101})
    assert too_long.status_code == 200 and "at most 100 characters" in too_long.content.decode()
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "token": "1/300"}
    assert client.post("/account/tokens/", {"name": "one"}).status_code == 200
    limited = client.post("/account/tokens/", {"name": "two"})
    assert limited.status_code == 429 and "Too many attempts" in limited.content.decode()
    assert ApiToken.objects.count() == 1


def test_tokens_page_revokes(make_user):
    user = make_user()
    token, raw = account_services.token_create(user=user, name="laptop")
    client = page_client(user)
    response = client.post("/account/tokens/revoke/", {"token": str(token.id)}, follow=True)
    assert response.redirect_chain == [("/account/tokens/", 302)]
    assert "Token &#x27;laptop&#x27; revoked" in response.content.decode()
    assert not works(raw)


@pytest.mark.parametrize("value", ["", "abc", "-1", "0", str(2**64), "１"])
def test_tokens_page_revoke_of_odd_ids_is_404(make_user, value):
    assert page_client(make_user()).post("/account/tokens/revoke/", {"token": value}).status_code == 404


def test_tokens_page_pages(make_user, settings):
    settings.CHAT_PAGE_SIZE = 2
    user = make_user()
    made = [account_services.token_create(user=user, name=f"token-{i}")[0] for i in range(3)]
    client = page_client(user)
    first = client.get("/account/tokens/").content.decode()
    assert "token-2" in first and "token-1" in first and "token-0" not in first
    assert f'href="?before={made[1].id}"' in first
    second = client.get(f"/account/tokens/?before={made[1].id}").content.decode()
    assert "token-0" in second and "token-1" not in second and "?before=" not in second


def test_sockets_that_connect_together_read_their_tokens_in_one_round_trip(make_user, make_token, django_assert_num_queries):
    from chat.selectors import tokens as token_selectors

    alice, bob = make_user(), make_user()
    a, b = make_token(alice), make_token(bob)
    token_selectors.users_for_tokens(raw_keys=[a, b, "nope"])  # cached from here on, the unknown one too
    with django_assert_num_queries(0):
        users = token_selectors.users_for_tokens(raw_keys=[a, "nope", b, "", a])
    assert [u.pk if u else None for u in users] == [alice.pk, None, bob.pk, None, alice.pk]
