"""ETag and 304 on the room page, against the real PostgreSQL and Redis."""

from __future__ import annotations

import gzip

import pytest
from django.contrib.messages import constants
from django.contrib.messages.storage.cookie import CookieStorage
from django.test import Client, RequestFactory

from chat.models import ReadMarker
from chat.services import messages as message_services
from chat.services import rooms as room_services
from projects.models import Membership

URL = "/p/world/r/general/"
SECRET_URL = "/p/world/r/secret/"


@pytest.fixture
def page(chat_world, make_message):
    """The member's client on a room with a few messages, and the first ETag."""
    for i in range(3):
        make_message(chat_world["public"], chat_world["owner"], body=f"hello {i}")
    client = Client()
    client.force_login(chat_world["member"])
    first = client.get(URL)
    assert first.status_code == 200
    return client, first["ETag"]


def revisit(client: Client, etag: str, url: str = URL, **headers):
    return client.get(url, headers={"If-None-Match": etag, **headers})


def test_repeat_visit_is_304(page):
    client, etag = page
    assert etag.startswith('"') and len(etag) == 34
    response = revisit(client, etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert "no-cache" in response["Cache-Control"] and "private" in response["Cache-Control"]


def test_page_is_private_and_revalidated(page):
    client, etag = page
    response = client.get(URL)
    assert response.status_code == 200 and response["ETag"] == etag  # nothing changed: same digest
    assert set(response["Cache-Control"].replace(" ", "").split(",")) == {"private", "no-cache"}
    assert "Cookie" in response["Vary"]


def test_repeat_visit_skips_rendering(page):
    client, etag = page
    full = client.get(URL)
    assert "chat/room_detail.html" in [t.name for t in full.templates]
    response = revisit(client, etag)
    assert response.status_code == 304 and response.templates == []


def test_new_message_changes_the_etag(page, chat_world, make_message):
    client, etag = page
    make_message(chat_world["public"], chat_world["owner"], body="fresh news")
    response = revisit(client, etag)
    assert response.status_code == 200
    assert response["ETag"] != etag and b"fresh news" in response.content
    assert revisit(client, response["ETag"]).status_code == 304


def test_edit_changes_the_etag(page, chat_world):
    client, etag = page
    message = chat_world["public"].messages.order_by("id").first()
    message_services.message_edit(message=message, by=chat_world["owner"], body="hello, edited")
    response = revisit(client, etag)
    assert response.status_code == 200 and b"hello, edited" in response.content
    assert response["ETag"] != etag


def test_delete_changes_the_etag(page, chat_world):
    client, etag = page
    message = chat_world["public"].messages.order_by("id").last()
    message_services.message_delete(message=message, by=chat_world["owner"])
    response = revisit(client, etag)
    assert response.status_code == 200 and b"message deleted" in response.content
    assert response["ETag"] != etag


def test_unread_in_another_room_changes_the_etag(page, chat_world, make_room, make_message):
    client, _ = page
    other = make_room(chat_world["project"], name="random")
    etag = client.get(URL)["ETag"]
    make_message(other, chat_world["owner"], body="elsewhere")
    response = revisit(client, etag)
    assert response.status_code == 200 and response["ETag"] != etag
    assert b'data-unread="1"' in response.content


def test_room_list_change_changes_the_etag(page, chat_world, make_room):
    client, etag = page
    make_room(chat_world["project"], name="brand new")
    response = revisit(client, etag)
    assert response.status_code == 200 and b"brand new" in response.content


def test_author_rename_changes_the_etag(page, chat_world):
    client, etag = page
    owner = chat_world["owner"]
    owner.first_name = "Olga"
    owner.save()
    response = revisit(client, etag)
    assert response.status_code == 200 and b"Olga" in response.content


def test_private_room_member_added_changes_the_etag(chat_world, make_user):
    client = Client()
    client.force_login(chat_world["insider"])
    etag = client.get(SECRET_URL)["ETag"]
    assert revisit(client, etag, SECRET_URL).status_code == 304
    newcomer = make_user("newcomer", first_name="Nina")
    Membership.objects.create(project=chat_world["project"], user=newcomer, role=Membership.Role.MEMBER)
    room_services.room_member_add(room=chat_world["private"], username="newcomer", by=chat_world["insider"])
    response = revisit(client, etag, SECRET_URL)
    assert response.status_code == 200 and b"Nina" in response.content


def test_another_user_never_gets_a_304_for_my_page(page, chat_world):
    _, etag = page
    other = Client()
    other.force_login(chat_world["admin"])
    response = revisit(other, etag)
    assert response.status_code == 200 and response["ETag"] != etag
    assert b"admin1" in response.content


def test_new_csrf_secret_changes_the_etag(page):
    client, etag = page
    client.cookies.pop("csrftoken", None)
    response = revisit(client, etag)
    assert response.status_code == 200 and response["ETag"] != etag


def test_read_marker_is_still_moved_on_304(page, chat_world, make_message):
    client, _ = page
    marker = ReadMarker.objects.get(room=chat_world["public"], user=chat_world["member"])
    newest = chat_world["public"].messages.order_by("-id").first()
    assert marker.last_read_message_id == newest.id
    etag = client.get(URL)["ETag"]
    assert revisit(client, etag).status_code == 304
    marker.refresh_from_db()
    assert marker.last_read_message_id == newest.id


def test_pending_flash_message_disables_304(page, chat_world):
    client, etag = page
    # A flash message waiting in the cookie storage, as a redirect after a form leaves it.
    request = RequestFactory().get("/")
    storage = CookieStorage(request)
    storage.add(constants.SUCCESS, "Welcome back")
    response = Client().get("/healthz")
    storage.update(response)
    client.cookies[storage.cookie_name] = response.cookies[storage.cookie_name].value
    shown = revisit(client, etag)
    assert shown.status_code == 200 and b"Welcome back" in shown.content
    assert "ETag" not in shown
    # Shown once; the next visit can be a 304 again.
    assert revisit(client, etag).status_code == 304


def test_compressed_page_revalidates_with_its_weak_etag(page):
    client, etag = page
    response = client.get(URL, headers={"Accept-Encoding": "gzip"})
    assert response["Content-Encoding"] == "gzip" and response["ETag"] == f"W/{etag}"
    assert b"hello 2" in gzip.decompress(response.content)
    again = revisit(client, response["ETag"], **{"Accept-Encoding": "gzip"})
    assert again.status_code == 304


def test_post_re_render_has_no_etag(chat_world):
    client = Client()
    client.force_login(chat_world["insider"])
    response = client.post("/p/world/r/secret/members/", {"username": "nobody-here"})
    assert response.status_code == 200
    assert "ETag" not in response
