"""Authentication, CSRF, error format and the OpenAPI document of /api/v1/."""

from __future__ import annotations

import orjson
import pytest
from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.test import Client

from chat.models import ApiToken, Message
from tests.conftest import PASSWORD

API = "/api/v1"


def csrf_client(user) -> tuple[Client, str]:
    """A browser-like client: logged in by session, CSRF enforced; returns the X-CSRFToken value."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    request = HttpRequest()
    token = get_token(request)
    client.cookies[settings.CSRF_COOKIE_NAME] = request.META["CSRF_COOKIE"]
    return client, token


def post_json(client: Client, path: str, data, **extra):
    return client.post(f"{API}{path}", data=orjson.dumps(data), content_type="application/json", **extra)


# --- POST /auth/token -----------------------------------------------------


def test_token_obtain_returns_a_working_token(make_user):
    user = make_user("tokenuser", first_name="Ada", last_name="Lovelace")
    response = post_json(Client(), "/auth/token", {"username": "tokenuser", "password": PASSWORD})
    assert response.status_code == 201
    token = response.json()["token"]
    assert ApiToken.objects.filter(user=user).count() == 1

    me = Client(headers={"Authorization": f"Bearer {token}"}).get(f"{API}/me")
    assert me.status_code == 200
    assert me.json() == {"id": user.id, "username": "tokenuser", "display_name": "Ada Lovelace", "is_staff": False, "email": ""}


@pytest.mark.parametrize(
    "username,password",
    [("tokenuser", "wrong-password"), ("nobody", PASSWORD), ("", "")],
)
def test_token_obtain_bad_credentials_is_401(make_user, username, password):
    make_user("tokenuser")
    response = post_json(Client(), "/auth/token", {"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid username or password.", "code": "invalid_credentials"}
    assert not ApiToken.objects.exists()


def test_token_obtain_inactive_user_is_401(make_user):
    user = make_user("sleeper")
    user.is_active = False
    user.save()
    response = post_json(Client(), "/auth/token", {"username": "sleeper", "password": PASSWORD})
    assert response.status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,field",
    [({"username": "x"}, "password"), ({"password": "x"}, "username"), ({"username": 1, "password": "x"}, "username")],
)
def test_token_obtain_invalid_body_is_422_naming_the_field(body, field):
    response = post_json(Client(), "/auth/token", body)
    assert response.status_code == 422
    data = response.json()
    assert data["code"] == "validation_error"
    assert field in data["detail"]
    assert [e["field"] for e in data["errors"]] == [field]


@pytest.mark.django_db
@pytest.mark.parametrize("raw", [b"{not json", b'{"username": "a",}', b"\xff\xfe", b"[1, 2]", b'"text"', b"null"])
def test_token_obtain_unusable_body_is_4xx_json(raw):
    response = Client().post(f"{API}/auth/token", data=raw, content_type="application/json")
    assert response.status_code in (400, 422)
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] in ("malformed_body", "validation_error")


@pytest.mark.django_db
def test_malformed_json_is_400_malformed_body():
    response = Client().post(f"{API}/auth/token", data=b"{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "The request body is not valid JSON.", "code": "malformed_body"}


@pytest.mark.django_db
def test_body_over_the_upload_limit_is_413():
    raw = b'{"username": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b'", "password": "x"}'
    response = Client().post(f"{API}/auth/token", data=raw, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


@pytest.mark.django_db
def test_empty_body_is_422():
    response = Client().post(f"{API}/auth/token", data=b"", content_type="application/json")
    assert response.status_code == 422


def test_token_obtain_needs_no_csrf_token(make_user):
    # It carries credentials in the body, not ambient ones, so a CSRF check would protect nothing.
    make_user("tokenuser")
    client = Client(enforce_csrf_checks=True)
    response = post_json(client, "/auth/token", {"username": "tokenuser", "password": PASSWORD})
    assert response.status_code == 201


# --- Bearer tokens --------------------------------------------------------

ENDPOINTS = [
    ("get", "/me"),
    ("get", "/projects"),
    ("post", "/projects"),
    ("get", "/projects/world"),
    ("get", "/projects/world/rooms"),
    ("post", "/projects/world/rooms"),
    ("get", "/projects/world/members"),
    ("post", "/projects/world/invitations"),
    ("delete", "/projects/world/members/1"),
    ("post", "/projects/world/leave"),
    ("get", "/invitations"),
    ("post", "/invitations/1/accept"),
    ("post", "/invitations/1/decline"),
    ("get", "/rooms/1"),
    ("post", "/rooms/1/members"),
    ("get", "/rooms/1/messages"),
    ("post", "/rooms/1/messages"),
    ("post", "/rooms/1/read"),
    ("patch", "/messages/1"),
    ("delete", "/messages/1"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_every_endpoint_refuses_anonymous_with_401(method, path):
    client = Client(enforce_csrf_checks=True)
    if method == "get":
        response = client.get(f"{API}{path}")
    else:
        response = getattr(client, method)(f"{API}{path}", data=b"{}", content_type="application/json")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Bearer not-a-real-token", "Bearer ", "Token abc", "Basic dXNlcjpwdw=="])
def test_bad_authorization_header_is_401(header):
    response = Client(headers={"Authorization": header}).get(f"{API}/me")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_token_of_deactivated_user_is_401(make_user, api_client):
    user = make_user()
    client = api_client(user)
    assert client.get(f"{API}/me").status_code == 200
    user.is_active = False
    user.save()
    assert client.get(f"{API}/me").status_code == 401


def test_token_auth_needs_no_csrf_token_for_writes(chat_world, make_token):
    member = chat_world["member"]
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {make_token(member)}"})
    response = post_json(client, f"/rooms/{chat_world['public'].id}/messages", {"body": "by token"})
    assert response.status_code == 201
    assert response.json()["author"]["username"] == "member"


def test_me_reports_staff(make_user, api_client):
    staff = make_user("boss", is_staff=True)
    assert api_client(staff).get(f"{API}/me").json()["is_staff"] is True


# --- Session cookie and CSRF ----------------------------------------------


def test_session_auth_reads_without_csrf_token(chat_world):
    client, _ = csrf_client(chat_world["member"])
    response = client.get(f"{API}/me")
    assert response.status_code == 200
    assert response.json()["username"] == "member"


def test_session_write_without_csrf_header_is_403(chat_world):
    client, _ = csrf_client(chat_world["member"])
    response = post_json(client, f"/rooms/{chat_world['public'].id}/messages", {"body": "forged"})
    assert response.status_code == 403
    assert response.json()["code"] == "csrf_failed"
    assert not Message.objects.exists()


def test_session_write_with_wrong_csrf_header_is_403(chat_world):
    client, token = csrf_client(chat_world["member"])
    wrong = get_token(HttpRequest())
    response = post_json(
        client, f"/rooms/{chat_world['public'].id}/messages", {"body": "forged"}, headers={"X-CSRFToken": wrong}
    )
    assert response.status_code == 403
    assert not Message.objects.exists()


def test_session_write_with_csrf_header_succeeds(chat_world):
    client, token = csrf_client(chat_world["member"])
    response = post_json(
        client, f"/rooms/{chat_world['public'].id}/messages", {"body": "legit"}, headers={"X-CSRFToken": token}
    )
    assert response.status_code == 201
    assert Message.objects.get().body == "legit"


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_session_patch_and_delete_need_csrf_too(chat_world, make_message, method):
    message = make_message(chat_world["public"], chat_world["member"], body="mine")
    client, token = csrf_client(chat_world["member"])
    path = f"{API}/messages/{message.id}"
    body = orjson.dumps({"body": "changed"})
    refused = getattr(client, method)(path, data=body, content_type="application/json")
    assert refused.status_code == 403
    allowed = getattr(client, method)(path, data=body, content_type="application/json", headers={"X-CSRFToken": token})
    assert allowed.status_code in (200, 204)


def test_session_of_logged_out_user_is_401(chat_world):
    client, token = csrf_client(chat_world["member"])
    client.logout()
    response = post_json(
        client, f"/rooms/{chat_world['public'].id}/messages", {"body": "x"}, headers={"X-CSRFToken": token}
    )
    assert response.status_code == 401


# --- Documents and format -------------------------------------------------


@pytest.mark.django_db
def test_openapi_json_lists_the_paths():
    response = Client().get(f"{API}/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    paths = set(schema["paths"])
    for path in (
        "/api/v1/auth/token",
        "/api/v1/me",
        "/api/v1/projects",
        "/api/v1/projects/{slug}",
        "/api/v1/projects/{slug}/rooms",
        "/api/v1/projects/{slug}/members",
        "/api/v1/projects/{slug}/invitations",
        "/api/v1/projects/{slug}/members/{user_id}",
        "/api/v1/projects/{slug}/leave",
        "/api/v1/invitations",
        "/api/v1/invitations/{invitation_id}/accept",
        "/api/v1/invitations/{invitation_id}/decline",
        "/api/v1/rooms/{room_id}",
        "/api/v1/rooms/{room_id}/members",
        "/api/v1/rooms/{room_id}/messages",
        "/api/v1/rooms/{room_id}/read",
        "/api/v1/messages/{message_id}",
    ):
        assert path in paths
    assert set(schema["components"]["securitySchemes"]) == {"BearerTokenAuth", "SessionCsrfAuth"}
    assert "security" not in schema["paths"]["/api/v1/auth/token"]["post"]
    assert schema["paths"]["/api/v1/me"]["get"]["security"]


@pytest.mark.django_db
def test_docs_page_loads():
    response = Client().get(f"{API}/docs")
    assert response.status_code == 200
    assert b"openapi.json" in response.content


def test_responses_are_compact_orjson(make_user, api_client):
    user = make_user("compact")
    response = api_client(user).get(f"{API}/me")
    assert response["Content-Type"].startswith("application/json")
    # orjson writes no spaces after separators; the stdlib json renderer would.
    assert response.content == orjson.dumps(response.json())
