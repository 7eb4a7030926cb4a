"""The account and room pages, through django.test.Client against the real database."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.models import Message, ReadMarker, Room, RoomMember
from chat.services import messages as message_services
from chat.services import rooms as room_services
from tests.conftest import PASSWORD

User = get_user_model()

MESSAGE_ID = re.compile(r'<li class="msg[^"]*" data-id="(\d+)"')


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def room_url(room: Room) -> str:
    return reverse("room-detail", kwargs={"slug": room.project.slug, "room_slug": room.slug})


def rendered_ids(html: str) -> list[int]:
    return [int(i) for i in MESSAGE_ID.findall(html)]


def page_config(html: str) -> dict:
    match = re.search(r'<script id="chat-config" type="application/json">(.*?)</script>', html, re.S)
    assert match, "the room page embeds its configuration"
    return json.loads(match.group(1))


# --- sign-up, log-in, log-out ------------------------------------------------


@pytest.mark.django_db
def test_signup_creates_user_logs_in_and_redirects():
    client = Client()
    assert client.get(reverse("signup")).status_code == 200
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "first_name": "New", "last_name": "Bie", "password1": "a-Long-pass-42", "password2": "a-Long-pass-42"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("project-list")
    user = User.objects.get(username="newbie")
    assert user.check_password("a-Long-pass-42") and user.get_full_name() == "New Bie"
    page = client.get(reverse("project-list"))
    assert page.status_code == 200
    assert "New Bie" in page.content.decode()


@pytest.mark.django_db
def test_signup_with_mismatched_passwords_shows_form_error(make_user):
    response = Client().post(
        reverse("signup"), {"username": "newbie", "password1": "a-Long-pass-42", "password2": "another-pass-42"}
    )
    assert response.status_code == 200
    assert "password fields didn" in response.content.decode()
    assert not User.objects.filter(username="newbie").exists()


@pytest.mark.django_db
def test_signup_with_taken_username_shows_form_error(make_user):
    make_user("taken")
    response = Client().post(
        reverse("signup"), {"username": "taken", "password1": "a-Long-pass-42", "password2": "a-Long-pass-42"}
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert User.objects.filter(username="taken").count() == 1


@pytest.mark.django_db
def test_signup_with_weak_password_shows_validator_error():
    response = Client().post(reverse("signup"), {"username": "weak", "password1": "123", "password2": "123"})
    assert response.status_code == 200
    assert "too short" in response.content.decode()
    assert not User.objects.filter(username="weak").exists()


def test_login_and_logout(make_user):
    make_user("alice")
    client = Client()
    page = client.get(reverse("login"))
    assert page.status_code == 200 and "csrfmiddlewaretoken" in page.content.decode()
    bad = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert bad.status_code == 200 and "correct username and password" in bad.content.decode()

    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("project-list")
    assert client.get(reverse("project-list")).status_code == 200

    assert client.get(reverse("logout")).status_code == 405  # logging out takes a POST
    response = client.post(reverse("logout"))
    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert client.get(reverse("project-list")).status_code == 302


def test_login_follows_next(make_user):
    make_user("alice")
    response = Client().post(
        reverse("login") + "?next=/p/somewhere/", {"username": "alice", "password": PASSWORD, "next": "/p/somewhere/"}
    )
    assert response["Location"] == "/p/somewhere/"


def test_forms_require_csrf(make_user):
    make_user("alice")
    client = Client(enforce_csrf_checks=True)
    assert client.post(reverse("login"), {"username": "alice", "password": PASSWORD}).status_code == 403


def test_logged_in_user_is_sent_away_from_login_and_signup(make_user):
    client = client_for(make_user())
    assert client.get(reverse("login"))["Location"] == reverse("project-list")
    assert client.get(reverse("signup"))["Location"] == reverse("project-list")


def test_pages_require_login(chat_world):
    project, room = chat_world["project"], chat_world["public"]
    client = Client()
    for method, url in [
        ("get", reverse("project-list")),
        ("post", reverse("project-list")),
        ("get", reverse("project-detail", kwargs={"slug": project.slug})),
        ("post", reverse("project-invite", kwargs={"slug": project.slug})),
        ("post", reverse("room-create", kwargs={"slug": project.slug})),
        ("get", room_url(room)),
        ("post", reverse("room-member-add", kwargs={"slug": project.slug, "room_slug": room.slug})),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


# --- the room page ------------------------------------------------------------


def test_room_page_is_404_for_outsiders_and_missing_rooms(chat_world):
    outsider = client_for(chat_world["outsider"])
    assert outsider.get(room_url(chat_world["public"])).status_code == 404
    assert outsider.get(room_url(chat_world["private"])).status_code == 404

    member = client_for(chat_world["member"])
    project_slug = chat_world["project"].slug
    missing = reverse("room-detail", kwargs={"slug": project_slug, "room_slug": "no-such-room"})
    assert member.get(missing).status_code == 404
    wrong_project = reverse("room-detail", kwargs={"slug": "no-such-project", "room_slug": "general"})
    assert member.get(wrong_project).status_code == 404


def test_private_room_is_404_for_project_members_who_are_not_in_it(chat_world):
    room = chat_world["private"]
    # Neither a plain member nor the project owner may read it without a RoomMember row.
    assert client_for(chat_world["member"]).get(room_url(room)).status_code == 404
    assert client_for(chat_world["owner"]).get(room_url(room)).status_code == 404
    assert client_for(chat_world["insider"]).get(room_url(room)).status_code == 200


def test_staff_get_no_implicit_access(chat_world):
    assert client_for(chat_world["staff"]).get(room_url(chat_world["public"])).status_code == 404


def test_room_page_shows_the_newest_50_messages_in_order(chat_world, make_message):
    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    messages = [make_message(room, (member, owner)[i % 2], body=f"body-{i:03d}") for i in range(51)]
    response = client_for(member).get(room_url(room))
    assert response.status_code == 200
    html = response.content.decode()
    assert rendered_ids(html) == [m.id for m in messages[1:]]
    assert "body-000" not in html
    assert "body-001" in html and "body-050" in html
    config = page_config(html)
    assert config["has_older"] is True
    assert 'id="load-older"' in html and 'id="load-older" class="btn btn-ghost btn-small" hidden' not in html


def test_room_page_with_few_messages_hides_load_older(chat_world, make_message):
    room = chat_world["public"]
    make_message(room, chat_world["member"], body="only one")
    html = client_for(chat_world["member"]).get(room_url(room)).content.decode()
    assert page_config(html)["has_older"] is False
    assert re.search(r'id="load-older"[^>]*hidden', html)


def test_message_bodies_are_escaped(chat_world, make_message):
    room = chat_world["public"]
    make_message(room, chat_world["owner"], body="<script>alert(1)</script>")
    make_message(room, chat_world["owner"], body='<img src=x onerror=alert(1)> & "quotes"')
    html = client_for(chat_world["member"]).get(room_url(room)).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "<img src=x onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quotes&quot;" in html


def test_display_names_are_escaped_too(chat_world, make_user, make_message):
    room = chat_world["public"]
    evil = make_user("evil", first_name="<b>Evil</b>")
    chat_world["project"].memberships.create(user=evil, role="member")
    make_message(room, evil, body="hi")
    html = client_for(chat_world["member"]).get(room_url(room)).content.decode()
    assert "<b>Evil</b>" not in html and "&lt;b&gt;Evil&lt;/b&gt;" in html


def test_room_page_shows_author_edited_and_tombstone(chat_world, make_user, make_message):
    room, owner = chat_world["public"], chat_world["owner"]
    owner.first_name, owner.last_name = "Olive", "Owner"
    owner.save()
    edited = make_message(room, owner, body="first draft")
    deleted = make_message(room, owner, body="secret that was removed")
    message_services.message_edit(message=_with_role(edited, owner), by=owner, body="final words")
    message_services.message_delete(message=_with_role(deleted, owner), by=owner)
    html = client_for(chat_world["member"]).get(room_url(room)).content.decode()
    assert "Olive Owner" in html
    assert "final words" in html and "(edited)" in html and "first draft" not in html
    assert "message deleted" in html and "secret that was removed" not in html
    assert f'data-id="{deleted.id}" data-seq="{deleted.seq}"' in html


def _with_role(message: Message, user) -> Message:
    from chat.selectors import history as history_selectors

    return history_selectors.message_get_for_user(user=user, message_id=message.id)


def _message_li(html: str, message_id: int) -> str:
    match = re.search(rf'<li class="msg[^"]*" data-id="{message_id}".*?</li>', html, re.S)
    assert match
    return match.group(0)


def test_edit_controls_on_own_messages_and_for_admins(chat_world, make_message):
    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    mine = make_message(room, member, body="mine")
    theirs = make_message(room, owner, body="theirs")

    html = client_for(member).get(room_url(room)).content.decode()
    assert 'data-action="edit"' in _message_li(html, mine.id)
    assert 'data-action="delete"' in _message_li(html, mine.id)
    assert 'data-action="edit"' not in _message_li(html, theirs.id)

    html = client_for(chat_world["admin"]).get(room_url(room)).content.decode()
    assert 'data-action="edit"' in _message_li(html, mine.id)
    assert 'data-action="delete"' in _message_li(html, theirs.id)


@pytest.mark.django_db
def test_the_message_list_is_a_cached_fragment_shared_by_kind_of_viewer(chat_world, make_user, make_message):
    from perf.cache import cache_stats, cache_stats_reset

    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    reader = make_user("reader2")
    chat_world["project"].memberships.create(user=reader)
    mine = make_message(room, member, body="mine")
    theirs = make_message(room, owner, body="theirs")

    def fragment(html: str) -> str:
        return html[html.index('<ol id="messages"') : html.index('<ol id="pending"')]

    cache_stats_reset()
    as_admin = fragment(client_for(chat_world["admin"]).get(room_url(room)).content.decode())
    as_reader = fragment(client_for(reader).get(room_url(room)).content.decode())
    as_member = fragment(client_for(member).get(room_url(room)).content.decode())
    # Three kinds of viewer, three renderings: none was served another's variant.
    assert cache_stats()["fragments"] == {"hits": 0, "misses": 3, "ratio": 0.0}
    assert 'data-action="delete"' in _message_li(as_admin, theirs.id)
    assert "data-action=\"edit\"" not in as_reader and "data-action=\"delete\"" not in as_reader and " mine" not in as_reader
    assert 'data-action="edit"' in _message_li(as_member, mine.id) and 'data-action="edit"' not in _message_li(as_member, theirs.id)
    assert 'class="msg mine"' in _message_li(as_member, mine.id)

    # Another plain reader shares the reader variant; the same viewer again hits too.
    other = make_user("reader3")
    chat_world["project"].memberships.create(user=other)
    assert fragment(client_for(other).get(room_url(room)).content.decode()) == as_reader
    assert fragment(client_for(member).get(room_url(room)).content.decode()) == as_member
    assert cache_stats()["fragments"]["hits"] == 2

    # An edit, a rename and a new message each show at once (a new key, not a stale entry).
    message_services.message_edit(message=selectors_message(member, mine.id), by=member, body="mine, edited")
    assert "mine, edited" in fragment(client_for(reader).get(room_url(room)).content.decode())
    owner.first_name = "Renamed"
    owner.save()
    assert "Renamed" in fragment(client_for(reader).get(room_url(room)).content.decode())
    newest = make_message(room, owner, body="newest")
    assert newest.id in rendered_ids(fragment(client_for(reader).get(room_url(room)).content.decode()))


def selectors_message(user, message_id: int) -> Message:
    from chat.selectors import history as history_selectors

    return history_selectors.message_get_for_user(user=user, message_id=message_id)


def test_room_page_config_for_the_client(chat_world, make_room):
    project, member = chat_world["project"], chat_world["member"]
    other = make_room(project, creator=member, name="random")
    html = client_for(member).get(room_url(chat_world["public"])).content.decode()
    config = page_config(html)
    assert config["room"] == chat_world["public"].id
    assert config["project"] == project.slug
    assert config["user"] == {"id": member.id, "username": "member", "display_name": "member"}
    assert config["my_role"] == "member"
    # The private room the member cannot read is neither in the sidebar nor subscribed to.
    assert config["other_rooms"] == [other.id]
    assert config["api"] == "/api/v1/"
    assert 'type="module"' in html and "chat/chat.js" in html


def test_viewing_a_room_marks_it_read(chat_world, make_message):
    room, member = chat_world["public"], chat_world["member"]
    make_message(room, chat_world["owner"])
    newest = make_message(room, chat_world["owner"])
    assert not ReadMarker.objects.filter(room=room, user=member).exists()
    client_for(member).get(room_url(room))
    assert ReadMarker.objects.get(room=room, user=member).last_read_message_id == newest.id
    # reading a public room makes nobody a member of it (who stays if it is made private)
    assert not RoomMember.objects.filter(room=room, user=member).exists()


def test_viewing_a_room_never_moves_the_marker_back(chat_world, make_message):
    room, member = chat_world["public"], chat_world["member"]
    newest = make_message(room, chat_world["owner"])
    room_services.room_mark_read(room=room, user=member, last_read_message_id=newest.id)
    client = client_for(member)
    client.get(room_url(room))
    assert ReadMarker.objects.get(room=room, user=member).last_read_message_id == newest.id


def test_sidebar_shows_unread_badges_and_clears_the_current_room(chat_world, make_room, make_message):
    project, member, owner = chat_world["project"], chat_world["member"], chat_world["owner"]
    busy = make_room(project, creator=owner, name="busy")
    for _ in range(3):
        make_message(busy, owner)
    make_message(chat_world["public"], owner)
    html = client_for(member).get(room_url(chat_world["public"])).content.decode()
    busy_link = _nav_link(html, busy.id)
    assert "has-unread" in busy_link and '<span class="badge" data-unread="3">3</span>' in busy_link
    current = _nav_link(html, chat_world["public"].id)
    assert "has-unread" not in current and '<span class="badge" data-unread="0" hidden>' in current


def _nav_link(html: str, room_id: int) -> str:
    match = re.search(rf'<a href="[^"]*" data-room-id="{room_id}".*?</a>', html, re.S)
    assert match
    return match.group(0)


def _room_with_history(make_user, make_project, make_message, *, count: int) -> tuple[Room, object]:
    """A fresh project whose general room holds ``count`` messages by five authors; and a viewer."""
    authors = [make_user(first_name=f"Author{i}") for i in range(5)]
    viewer = make_user()
    project = make_project(authors[0], members=(viewer, *authors[1:]))
    room = Room.objects.select_related("project").get(project=project, slug="general")
    for i in range(count):
        make_message(room, authors[i % len(authors)])
    return room, viewer


def test_room_page_query_count_does_not_grow_with_messages(
    make_user, make_project, make_message, django_assert_num_queries
):
    # Two separate projects and viewers, so both visits start from the same
    # (cold) cache state and differ only in the number of messages and authors.
    small_room, small_viewer = _room_with_history(make_user, make_project, make_message, count=5)
    big_room, big_viewer = _room_with_history(make_user, make_project, make_message, count=50)
    small_client, big_client = client_for(small_viewer), client_for(big_viewer)

    with CaptureQueriesContext(connection) as small:
        response = small_client.get(room_url(small_room))
    assert len(rendered_ids(response.content.decode())) == 5

    with django_assert_num_queries(len(small.captured_queries)):
        response = big_client.get(room_url(big_room))
    assert len(rendered_ids(response.content.decode())) == 50


def test_room_create_form(chat_world):
    project, member = chat_world["project"], chat_world["member"]
    client = client_for(member)
    url = reverse("room-create", kwargs={"slug": project.slug})
    response = client.post(url, {"name": "Design Talk", "topic": "pixels", "is_private": "on"})
    room = Room.objects.get(project=project, slug="design-talk")
    assert response.status_code == 302 and response["Location"] == room_url(room)
    assert room.is_private and room.topic == "pixels"
    assert RoomMember.objects.filter(room=room, user=member).exists()
    assert client.get(room_url(room)).status_code == 200

    duplicate = client.post(url, {"name": "design talk"})
    assert duplicate.status_code == 200
    assert "already exists" in duplicate.content.decode()

    blank = client.post(url, {"name": "   "})
    assert blank.status_code == 200 and "This field is required" in blank.content.decode()
    symbols = client.post(url, {"name": "!!!"})
    assert symbols.status_code == 200 and "letters or digits" in symbols.content.decode()
    assert Room.objects.filter(project=project).count() == 3


def test_room_create_is_404_for_outsiders(chat_world):
    project = chat_world["project"]
    response = client_for(chat_world["outsider"]).post(reverse("room-create", kwargs={"slug": project.slug}), {"name": "x"})
    assert response.status_code == 404
    assert not Room.objects.filter(project=project, slug="x").exists()


def test_room_member_add_form(chat_world):
    room, project = chat_world["private"], chat_world["project"]
    url = reverse("room-member-add", kwargs={"slug": project.slug, "room_slug": room.slug})
    client = client_for(chat_world["insider"])
    html = client.get(room_url(room)).content.decode()
    assert 'id="room-member-form"' in html

    unknown = client.post(url, {"username": "nobody"})
    assert unknown.status_code == 200 and "No project member named" in unknown.content.decode()
    outsider = client.post(url, {"username": "outsider"})
    assert outsider.status_code == 200 and "No project member named" in outsider.content.decode()
    assert not RoomMember.objects.filter(room=room, user=chat_world["outsider"]).exists()

    response = client.post(url, {"username": "member"})
    assert response.status_code == 302 and response["Location"] == room_url(room)
    assert RoomMember.objects.filter(room=room, user=chat_world["member"]).exists()
    assert client_for(chat_world["member"]).get(room_url(room)).status_code == 200


def test_room_member_add_is_404_for_those_who_cannot_see_the_room(chat_world):
    room, project = chat_world["private"], chat_world["project"]
    url = reverse("room-member-add", kwargs={"slug": project.slug, "room_slug": room.slug})
    assert client_for(chat_world["member"]).post(url, {"username": "member"}).status_code == 404
    assert client_for(chat_world["outsider"]).post(url, {"username": "outsider"}).status_code == 404
    assert not RoomMember.objects.filter(room=room, user__username__in=["member", "outsider"]).exists()


def test_public_rooms_have_no_add_member_form(chat_world):
    room, project = chat_world["public"], chat_world["project"]
    client = client_for(chat_world["owner"])
    assert 'id="room-member-form"' not in client.get(room_url(room)).content.decode()
    url = reverse("room-member-add", kwargs={"slug": project.slug, "room_slug": room.slug})
    assert client.post(url, {"username": "member"}).status_code == 404


def test_login_page_is_rate_limited_per_account(make_user, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_account": "2/300"}
    make_user("alice")
    client = Client()
    for _ in range(2):
        assert client.post(reverse("login"), {"username": "alice", "password": "wrong"}).status_code == 200
    # Past the limit even the right password is refused, without being checked.
    response = client.post(reverse("login"), {"username": "Alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many attempts; try again in" in response.content.decode()
    assert client.get(reverse("project-list")).status_code == 302
    # Another account from the same address is not affected.
    make_user("bob")
    assert client.post(reverse("login"), {"username": "bob", "password": PASSWORD}).status_code == 302


@pytest.mark.django_db
def test_signup_is_rate_limited_per_address(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login_ip": "1/300"}
    client = Client()
    data = {"username": "first", "password1": "a-Long-pass-42", "password2": "a-Long-pass-42"}
    assert client.post(reverse("signup"), data).status_code == 302
    client.post(reverse("logout"))
    response = client.post(reverse("signup"), {**data, "username": "second"})
    assert response.status_code == 429 and "Too many attempts" in response.content.decode()
    assert not User.objects.filter(username="second").exists()


def test_room_create_form_is_rate_limited(chat_world, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "room_create": "1/3600"}
    project = chat_world["project"]
    client = client_for(chat_world["member"])
    url = reverse("room-create", kwargs={"slug": project.slug})
    assert client.post(url, {"name": "one"}).status_code == 302
    response = client.post(url, {"name": "two"})
    assert response.status_code == 200 and "Too many attempts" in response.content.decode()
    assert not Room.objects.filter(project=project, slug="two").exists()


def test_a_member_leaves_a_private_room_from_its_page(chat_world, make_user):
    private, insider, project = chat_world["private"], chat_world["insider"], chat_world["project"]
    second = make_user("second")
    from projects.models import Membership

    Membership.objects.create(project=project, user=second, role=Membership.Role.MEMBER)
    room_services.room_member_add(room=private, username="second", by=insider)
    client = client_for(insider)
    page = client.get(room_url(private)).content.decode()
    assert f'action="{room_url(private)}leave/"' in page
    response = client.post(f"{room_url(private)}leave/")
    assert response.status_code == 302 and response["Location"] == reverse("project-detail", args=[project.slug])
    assert not RoomMember.objects.filter(room=private, user=insider).exists()
    assert client.get(room_url(private)).status_code == 404
    # The last member stays: nobody could read the room or add anyone again.
    last = client_for(second)
    response = last.post(f"{room_url(private)}leave/", follow=True)
    assert "The last member of a private room cannot leave it." in response.content.decode()
    assert RoomMember.objects.filter(room=private, user=second).exists()
