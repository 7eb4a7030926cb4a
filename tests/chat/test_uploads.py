"""Shared files: upload (API and limits), download behind the room's access check, claims, thumbnails."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from chat.models import Upload
from chat.selectors import history as history_selectors
from chat.services import messages as message_services
from chat.services import uploads as upload_services
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path) -> Any:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def png(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def upload(client: Client, room_id: int, name: str, content: bytes) -> Any:
    return client.post(f"/api/v1/rooms/{room_id}/uploads", {"file": SimpleUploadedFile(name, content)})


def session(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_an_image_is_shared_and_only_its_rooms_readers_download_it(chat_world, api_client):
    room, member, outsider = chat_world["public"], chat_world["member"], chat_world["outsider"]
    response = upload(api_client(member), room.id, "photo.png", png())
    assert response.status_code == 201, response.content
    item = response.json()
    assert item["name"] == "photo.png" and item["content_type"] == "image/png" and (item["width"], item["height"]) == (64, 48)
    assert item["url"] == f"/files/{item['id']}/photo.png" and item["thumbnail_url"] is None and item["message"] is None
    assert item["markdown"] == f"[photo.png](</files/{item['id']}/photo.png>)"

    got = session(chat_world["owner"]).get(item["url"])
    assert got.status_code == 200 and got["Content-Type"] == "image/png"
    assert b"".join(got.streaming_content) == png()
    assert "attachment" not in got.get("Content-Disposition", "")  # images show inline
    assert got["X-Content-Type-Options"] == "nosniff" and got["Content-Security-Policy"].startswith("sandbox")
    assert "private" in got["Cache-Control"]
    assert session(outsider).get(item["url"]).status_code == 404
    assert Client().get(item["url"]).status_code == 302  # to log in
    # Programs fetch it with their token; others get 404 as for a missing file.
    assert api_client(chat_world["owner"]).get(f"/api/v1/files/{item['id']}").status_code == 200
    assert api_client(outsider).get(f"/api/v1/files/{item['id']}").json()["code"] == "not_found"


def test_a_private_rooms_files_stay_in_it(chat_world, api_client):
    private, insider, member = chat_world["private"], chat_world["insider"], chat_world["member"]
    item = upload(api_client(insider), private.id, "secret.pdf", b"%PDF-1.4 secret").json()
    assert session(insider).get(item["url"]).status_code == 200
    assert session(member).get(item["url"]).status_code == 404  # a project member outside the room
    assert upload(api_client(member), private.id, "x.pdf", b"%PDF-1.4").status_code == 404
    assert api_client(member).get(f"/api/v1/rooms/{private.id}/files").status_code == 404


def test_other_files_download_as_attachments(chat_world, api_client):
    room, member = chat_world["public"], chat_world["member"]
    item = upload(api_client(member), room.id, "notes.txt", b"<script>alert(1)</script>").json()
    got = session(member).get(item["url"])
    assert got["Content-Type"] == "text/plain" and got["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize(
    "name,content,status,code",
    [
        ("tool.exe", b"MZ....", 415, "unsupported_type"),
        ("fake.png", b"not an image at all", 415, "unsupported_type"),
        ("empty.txt", b"", 400, "empty_file"),
        ("../../../etc/passwd.txt", b"ok", 201, None),  # only its own name is kept
    ],
)
def test_what_cannot_be_shared_gets_a_clear_error(chat_world, api_client, name, content, status, code):
    response = upload(api_client(chat_world["member"]), chat_world["public"].id, name, content)
    assert response.status_code == status, response.content
    if code:
        assert response.json()["code"] == code
    else:
        assert response.json()["name"] == "passwd.txt" and "/etc/" not in Upload.objects.get().file.name


def test_a_file_past_the_limit_is_refused_while_it_is_read(chat_world, api_client, settings):
    settings.CHAT_UPLOAD_MAX_BYTES = 1000
    response = upload(api_client(chat_world["member"]), chat_world["public"].id, "big.txt", b"x" * 5000)
    assert response.status_code == 413 and response.json()["code"] == "file_too_large"
    assert not Upload.objects.exists()
    response = api_client(chat_world["member"]).post(f"/api/v1/rooms/{chat_world['public'].id}/uploads", {})
    assert response.status_code == 400 and response.json()["code"] == "missing_file"


def test_uploads_are_rate_limited(chat_world, api_client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload": "2/60"}
    client = api_client(chat_world["member"])
    for _ in range(2):
        assert upload(client, chat_world["public"].id, "a.txt", b"a").status_code == 201
    assert upload(client, chat_world["public"].id, "a.txt", b"a").status_code == 429


def test_a_message_that_links_a_file_puts_it_in_the_rooms_file_list(chat_world, api_client, django_capture_on_commit_callbacks):
    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    mine = upload(api_client(member), room.id, "plan.pdf", b"%PDF-1.4 plan").json()
    theirs = upload(api_client(owner), room.id, "other.pdf", b"%PDF-1.4 other").json()
    # Linking someone else's upload does not make it yours to share.
    with django_capture_on_commit_callbacks(execute=True):  # the claim follows the message's commit
        message, _ = message_services.message_create(room=room, author=member, body=f"see {mine['markdown']} and {theirs['markdown']}")
    assert Upload.objects.get(pk=mine["id"]).message_id == message.id
    assert Upload.objects.get(pk=theirs["id"]).message_id is None
    listed = api_client(owner).get(f"/api/v1/rooms/{room.id}/files").json()
    assert [f["id"] for f in listed["items"]] == [mine["id"]] and listed["items"][0]["uploader"]["id"] == member.id
    html = api_client(owner).get(f"/api/v1/rooms/{room.id}/messages").json()["items"][-1]["html"]
    assert f'<a href="/files/{mine["id"]}/plan.pdf" class="file"' in html
    # A deleted message takes its files out of the list (they stay downloadable for the room's readers).
    loaded = history_selectors.message_get_for_user(user=member, message_id=message.id)
    message_services.message_delete(message=loaded, by=member)
    assert api_client(owner).get(f"/api/v1/rooms/{room.id}/files").json()["items"] == []


def test_images_get_a_thumbnail_from_the_worker_and_never_in_the_request(chat_world, api_client, django_capture_on_commit_callbacks):
    room, member = chat_world["public"], chat_world["member"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        item = upload(api_client(member), room.id, "wide.png", png(1600, 400)).json()
    assert len(callbacks) == 1  # the worker's job, enqueued after commit
    assert session(member).get(f"/files/{item['id']}/thumb").status_code == 404  # not made yet
    assert upload_services.upload_thumbnail(upload_id=item["id"]) is True
    assert upload_services.upload_thumbnail(upload_id=item["id"]) is False  # once
    thumb = session(member).get(f"/files/{item['id']}/thumb")
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(b"".join(thumb.streaming_content))) as image:
        assert image.size == (480, 120)
    assert session(chat_world["outsider"]).get(f"/files/{item['id']}/thumb").status_code == 404
    assert api_client(member).get(f"/api/v1/rooms/{room.id}/files").json()["items"] == []  # not shared by a message yet


def test_an_archived_project_takes_no_files(chat_world, api_client):
    project = chat_world["project"]
    project.archived = True
    project.save(update_fields=["archived"])
    from chat.selectors.rooms import room_get_for_user  # noqa: F401 - the room cache follows the project's signal

    response = upload(api_client(chat_world["owner"]), chat_world["public"].id, "a.txt", b"a")
    assert response.status_code == 403 and response.json()["code"] == "archived"


def test_names_are_cleaned():
    assert upload_services.clean_name("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert upload_services.clean_name("  .hidden.txt ") == "hidden.txt"
    assert upload_services.clean_name('a"b<c>#?.txt') == "a_b_c___.txt"
    assert len(upload_services.clean_name("x" * 500 + ".png")) == upload_services.NAME_MAX
    assert upload_services.clean_name("x" * 500 + ".png").endswith(".png")
    with pytest.raises(Exception):
        upload_services.clean_name("\u200b\n")
