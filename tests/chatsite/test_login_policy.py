"""The log-in limits (chatsite.login_policy) on each surface that checks a password:
/login/, /admin/login/ and POST /api/v1/auth/token. Counters live in the real Redis.

Failures are counted per (account, address), per address and per account; a
pair or an address over its limit is refused unchecked; an account over its
limit still takes a try from an address that has not failed for it.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.test import Client

from chat.models import ApiToken
from chatsite import login_policy
from tests.conftest import PASSWORD

API = "/api/v1"
OWNER_ADDRESS = "192.0.2.10"
SURFACES = ["/login/", "/admin/login/", f"{API}/auth/token"]


@pytest.fixture
def limits(settings) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_pair": "3/300", "login_ip": "10/300", "login_account": "5/300"}


@pytest.fixture
def boss(make_user) -> Any:
    """A staff account, so every surface (the admin login included) can sign it in."""
    return make_user("boss", is_staff=True)


def attempt(surface: str, username: str, password: str, address: str = "127.0.0.1") -> Any:
    client = Client(REMOTE_ADDR=address)
    if surface.startswith(API):
        return client.post(
            surface, data=orjson.dumps({"username": username, "password": password}), content_type="application/json"
        )
    return client.post(surface, {"username": username, "password": password})


def succeeded(surface: str, response: Any) -> bool:
    if surface.startswith(API):
        return response.status_code == 201
    return response.status_code == 302


def failed(surface: str, response: Any) -> bool:
    """A checked, wrong password: the form again (200) or 401."""
    return response.status_code == (401 if surface.startswith(API) else 200)


def assert_refused(surface: str, response: Any) -> None:
    assert response.status_code == 429, response.content
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 301
    if surface.startswith(API):
        assert response.json() == {
            "detail": f"Too many attempts; try again in {retry_after} seconds.",
            "code": "rate_limited",
            "retry_after": retry_after,
        }
    else:
        page = response.content.decode()
        assert f"Too many attempts; try again in {retry_after} seconds." in page
        assert 'name="password"' in page  # the form, to try again later


def counts(username: str, address: str = "127.0.0.1") -> tuple[int, int, int]:
    return tuple(usage.count for usage in login_policy.login_usage(username=username, address=address))  # type: ignore[return-value]


# --- The admin login (it had no limit) ---------------------------------------


def test_admin_login_is_limited_and_its_counters_move(limits, boss):
    for expected in range(1, 4):
        response = attempt("/admin/login/", "boss", "wrong")
        assert response.status_code == 200 and response.context["form"].errors
        assert counts("boss") == (expected, expected, expected)
    # Past the pair's limit the right password is refused unchecked, and not counted.
    for _ in range(2):
        assert_refused("/admin/login/", attempt("/admin/login/", "boss", PASSWORD))
    assert counts("boss") == (3, 3, 3)
    assert Client().get("/admin/").status_code == 302


def test_admin_login_still_signs_staff_in(limits, boss):
    client = Client()
    response = client.post("/admin/login/", {"username": "boss", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


# --- Lockout as a weapon ----------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_the_owner_signs_in_while_others_attack_the_account(limits, boss, surface):
    # One address uses up its pair's limit (3 of the account's 5 failures) ...
    for _ in range(3):
        assert failed(surface, attempt(surface, "boss", "guess", "198.51.100.1"))
    assert_refused(surface, attempt(surface, "boss", "guess", "198.51.100.1"))
    # ... a second one fails twice, which uses up the account's limit: its pair is under
    # its own limit, but it has failed for this account, so it is refused.
    for _ in range(2):
        assert failed(surface, attempt(surface, "boss", "guess", "198.51.100.2"))
    assert_refused(surface, attempt(surface, "boss", "guess", "198.51.100.2"))
    assert counts("boss", "198.51.100.2") == (2, 2, 5)

    # A fresh address gets one try, then it is refused the same way.
    assert failed(surface, attempt(surface, "boss", "guess", "198.51.100.3"))
    assert_refused(surface, attempt(surface, "boss", "guess", "198.51.100.3"))
    assert counts("boss", "198.51.100.3") == (1, 1, 6)

    # The owner, from an address that never failed, is let through.
    assert succeeded(surface, attempt(surface, "boss", PASSWORD, OWNER_ADDRESS))


@pytest.mark.parametrize("surface", SURFACES)
def test_a_pair_over_its_limit_is_refused_other_pairs_are_not(limits, boss, make_user, surface):
    make_user("clerk")
    for _ in range(3):
        assert failed(surface, attempt(surface, "boss", "wrong"))
    assert_refused(surface, attempt(surface, "boss", PASSWORD))
    # Case and width variants of the name are the same account.
    assert_refused(surface, attempt(surface, "BOSS", PASSWORD))
    # Another account from the same address, and the same account from another address, are fine.
    if surface != "/admin/login/":  # clerk is not staff
        assert succeeded(surface, attempt(surface, "clerk", PASSWORD))
    assert succeeded(surface, attempt(surface, "boss", PASSWORD, OWNER_ADDRESS))


@pytest.mark.parametrize("surface", SURFACES)
def test_an_address_over_its_limit_is_refused(settings, boss, surface):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_pair": "3/300", "login_ip": "4/300", "login_account": "5/300"}
    for name in ("ann", "bob", "cid", "dan"):  # one failure each: no pair is near its limit
        assert failed(surface, attempt(surface, name, "wrong"))
    assert counts("boss") == (0, 4, 0)
    assert_refused(surface, attempt(surface, "boss", PASSWORD))
    assert succeeded(surface, attempt(surface, "boss", PASSWORD, OWNER_ADDRESS))


@pytest.mark.parametrize("surface", SURFACES)
def test_successes_do_not_count(limits, boss, surface):
    for _ in range(5):
        assert succeeded(surface, attempt(surface, "boss", PASSWORD))
    assert counts("boss") == (0, 0, 0)
    for _ in range(3):
        assert failed(surface, attempt(surface, "boss", "wrong"))
    assert_refused(surface, attempt(surface, "boss", PASSWORD))


def test_a_refused_token_request_issues_no_token(limits, boss):
    for _ in range(3):
        attempt(f"{API}/auth/token", "boss", "wrong")
    assert_refused(f"{API}/auth/token", attempt(f"{API}/auth/token", "boss", PASSWORD))
    assert not ApiToken.objects.exists()


def test_failed_logins_and_signups_share_the_address_limit(settings, make_user):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_ip": "2/300"}
    for _ in range(2):
        assert attempt("/login/", "nobody", "wrong").status_code == 200
    data = {"username": "newcomer", "password1": "a-Long-pass-42", "password2": "a-Long-pass-42"}
    response = Client().post("/signup/", data)
    assert response.status_code == 429 and "Too many attempts" in response.content.decode()


def test_login_account_folds_case_and_width_and_quotes_separators():
    assert login_policy.login_account("  Boss ") == login_policy.login_account("boss")
    assert login_policy.login_account("ＢＯＳＳ") == "boss"  # fullwidth letters
    assert ":" not in login_policy.login_account("a:b|c") and "|" not in login_policy.login_account("a:b|c")
    assert len(login_policy.login_account("x" * 10_000)) == login_policy.USERNAME_MAX
