"""Who may share, list and download files, over the JSON API (bearer token and session + CSRF) and the
page URLs, and what happens when access ends.

Same rules and the same outcomes as test_isolation.py's MATRIX, on the same
world (tests/security/conftest.py): HIDDEN is compared byte for byte with the
same request for an id that does not exist, and every denied upload is
checked in the database. The files of the world were shared by someone else
(the owner in the public room, a room member in the private one).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from chat.models import Upload
from chat.services import rooms as room_services
from tests.security.conftest import MISSING_ID, ROLES, World, session_api_client

OK, HIDDEN, LOGIN = "ok", "hidden", "login"
API = "/api/v1"

# fmt: off
MATRIX: dict[str, tuple[str, ...]] = {
    # action                 anonymous  non_member  staff   member  private_member  admin
    "public.upload":        (LOGIN,     HIDDEN,     HIDDEN, OK,     OK,             OK),
    "public.list_files":    (LOGIN,     HIDDEN,     HIDDEN, OK,     OK,             OK),
    "public.download":      (LOGIN,     HIDDEN,     HIDDEN, OK,     OK,             OK),
    "public.page_download": (LOGIN,     HIDDEN,     HIDDEN, OK,     OK,             OK),
    "private.upload":       (LOGIN,     HIDDEN,     HIDDEN, HIDDEN, OK,             HIDDEN),
    "private.list_files":   (LOGIN,     HIDDEN,     HIDDEN, HIDDEN, OK,             HIDDEN),
    "private.download":     (LOGIN,     HIDDEN,     HIDDEN, HIDDEN, OK,             HIDDEN),
    "private.page_download": (LOGIN,    HIDDEN,     HIDDEN, HIDDEN, OK,             HIDDEN),
}
# fmt: on


@pytest.fixture(autouse=True)
def media(settings, tmp_path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def cases() -> list[Any]:
    """Every cell, with each way of signing in its surface takes (page URLs are a browser's: session only)."""
    return [
        pytest.param(role, action, outcome, auth, id=f"{action}-{role}-{auth}")
        for action, outcomes in MATRIX.items()
        for role, outcome in zip(ROLES, outcomes)
        for auth in (("session",) if action.endswith("page_download") else ("bearer", "session"))
    ]


def test_matrix_covers_every_role():
    assert all(len(row) == len(ROLES) for row in MATRIX.values())


def _shared(world: World, room_kind: str) -> Upload:
    """A file someone else shared in the room (stored through the storage like any upload)."""
    message = (world.public_messages if room_kind == "public" else world.private_messages)[0]
    upload = Upload(room_id=message.room_id, uploader=message.author, message=message, name="plan.pdf",
                    content_type="application/pdf", size=9)  # fmt: skip
    upload.file.save("plan.pdf", SimpleUploadedFile("plan.pdf", b"%PDF-plan"), save=True)
    return upload


def _client(auth: str, world: World, role: str) -> tuple[Client, dict[str, str]]:
    if auth == "bearer":
        return Client(), ({"Authorization": f"Bearer {world.tokens[role]}"} if role in world.tokens else {})
    return session_api_client(world.user(role))


def _request(client: Client, headers: dict[str, str], room_id: int, upload_id: int, verb: str) -> Any:
    if verb == "upload":
        return client.post(f"{API}/rooms/{room_id}/uploads", {"file": SimpleUploadedFile("a.txt", b"hello")}, headers=headers)
    if verb == "list_files":
        return client.get(f"{API}/rooms/{room_id}/files", headers=headers)
    if verb == "download":
        return client.get(f"{API}/files/{upload_id}", headers=headers)
    return client.get(f"/files/{upload_id}/plan.pdf", headers=headers)


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "action", "expected", "auth"), cases())
def test_files(world: World, role: str, action: str, expected: str, auth: str) -> None:
    room_kind, _, verb = action.partition(".")
    room = getattr(world, room_kind)
    shared = _shared(world, room_kind)
    client, headers = _client(auth, world, role)
    before = Upload.objects.count()
    response = _request(client, headers, room.id, shared.id, verb)
    stored = Upload.objects.count() - before

    if expected == LOGIN:
        if verb == "page_download":
            assert response.status_code == 302 and "/login/" in response["Location"]
        else:
            assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
    elif expected == HIDDEN:
        probe = _request(client, headers, MISSING_ID, MISSING_ID, verb)
        assert response.status_code == 404
        assert (response.status_code, response.content) == (probe.status_code, probe.content)
    elif verb == "upload":
        assert response.status_code == 201, response.content
    elif verb == "list_files":
        assert response.status_code == 200 and [f["id"] for f in response.json()["items"]] == [shared.id]
    else:
        assert response.status_code == 200 and b"".join(response.streaming_content) == b"%PDF-plan"
    # Only an allowed upload stores a file (the HIDDEN probe for a missing room stores none either).
    assert stored == (1 if verb == "upload" and expected == OK else 0)


@pytest.mark.django_db
def test_leaving_a_private_room_ends_its_files_at_once(world: World) -> None:
    insider = world.user("private_member")
    shared = _shared(world, "private")
    client, headers = session_api_client(insider)
    assert client.get(f"/files/{shared.id}/plan.pdf").status_code == 200
    room_services.room_member_remove(room=world.private, user=insider, by=insider)
    assert client.get(f"/files/{shared.id}/plan.pdf").status_code == 404
    assert client.get(f"{API}/files/{shared.id}", headers=headers).status_code == 404
