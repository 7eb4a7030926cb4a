"""The Django admin: every model is reachable by staff, and the message list stays cheap."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.models import ApiToken, Message, Pin, Reaction, Room, RoomMember, SavedMessage, Upload
from chat.services import accounts as account_services
from chat.services import rooms as room_services
from projects.models import Membership, Project

User = get_user_model()


@pytest.fixture
def admin_world(chat_world, make_message) -> dict[str, Any]:
    world = dict(chat_world)
    world["message"] = make_message(world["public"], world["member"], body="hello from the admin test")
    make_message(world["private"], world["insider"], body="a private word")
    world["token"], world["raw_key"] = account_services.token_create(user=world["member"], name="ci")
    message = world["message"]
    world["reaction"] = Reaction.objects.create(message=message, user=world["owner"], emoji="\N{THUMBS UP SIGN}")
    world["pin"] = Pin.objects.create(room=world["public"], message=message, pinned_by=world["admin"])
    world["saved"] = SavedMessage.objects.create(user=world["owner"], message=message)
    world["upload"] = Upload.objects.create(
        room=world["public"], uploader=world["member"], message=message, file="uploads/x/plan.pdf", name="plan.pdf",
        content_type="application/pdf", size=9,
    )
    return world


@pytest.fixture
def staff_client(admin_world) -> Client:
    client = Client()
    client.force_login(admin_world["staff"])  # staff users are superusers (chat.services.accounts.user_create)
    return client


def objects(world: dict[str, Any]) -> dict[type, Any]:
    return {
        Project: world["project"],
        Membership: Membership.objects.filter(project=world["project"]).first(),
        Room: world["public"],
        RoomMember: RoomMember.objects.filter(room=world["private"]).first(),
        Message: world["message"],
        ApiToken: world["token"],
        User: world["member"],
        Reaction: world["reaction"],
        Pin: world["pin"],
        SavedMessage: world["saved"],
        Upload: world["upload"],
    }


def admin_url(model: type, action: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{action}", args=args)


@pytest.mark.parametrize(
    "model", [Project, Membership, Room, RoomMember, Message, ApiToken, User, Reaction, Pin, SavedMessage, Upload]
)
def test_staff_gets_changelist_and_change_page(staff_client, admin_world, model):
    obj = objects(admin_world)[model]
    changelist = staff_client.get(admin_url(model, "changelist"))
    assert changelist.status_code == 200
    assert admin_url(model, "change", obj.pk) in changelist.content.decode()
    change = staff_client.get(admin_url(model, "change", obj.pk))
    assert change.status_code == 200


def test_message_changelist_search(staff_client, admin_world):
    url = admin_url(Message, "changelist")
    found = staff_client.get(url, {"q": "admin test"})
    assert found.status_code == 200
    assert "hello from the admin test" in found.content.decode()
    assert "a private word" not in found.content.decode()
    by_author = staff_client.get(url, {"q": admin_world["insider"].username})
    assert by_author.status_code == 200
    assert "a private word" in by_author.content.decode()


def test_message_changelist_date_drill_down(staff_client, admin_world):
    created = admin_world["message"].created_at
    url = admin_url(Message, "changelist")
    year = staff_client.get(url, {"created_at__year": created.year})
    assert year.status_code == 200
    assert f"created_at__month={created.month}" in year.content.decode()
    day = staff_client.get(
        url, {"created_at__year": created.year, "created_at__month": created.month, "created_at__day": created.day}
    )
    assert "hello from the admin test" in day.content.decode()


def test_token_page_shows_the_hash_never_the_key(staff_client, admin_world):
    token, raw = admin_world["token"], admin_world["raw_key"]
    for url in (admin_url(ApiToken, "changelist"), admin_url(ApiToken, "change", token.pk)):
        assert raw not in staff_client.get(url).content.decode()
    page = staff_client.get(admin_url(ApiToken, "change", token.pk)).content.decode()
    assert token.key_hash in page
    assert 'name="key_hash"' not in page  # shown read-only, not as an input


def test_service_owned_objects_cannot_be_added_in_the_admin(staff_client, admin_world):
    for model in (Project, Room, Message, ApiToken, Reaction, Pin, SavedMessage, Upload):
        assert staff_client.get(admin_url(model, "add")).status_code == 403


@pytest.mark.parametrize("model", [Reaction, Pin, SavedMessage, Upload])
def test_reactions_pins_and_saves_are_view_only(staff_client, admin_world, model):
    """Their services tell open sockets about each change; the admin would not, so it changes nothing."""
    obj = objects(admin_world)[model]
    page = staff_client.get(admin_url(model, "change", obj.pk)).content.decode()
    assert 'name="_save"' not in page
    assert staff_client.post(admin_url(model, "change", obj.pk), {}).status_code == 403
    assert staff_client.get(admin_url(model, "delete", obj.pk)).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


def test_room_list_shows_and_filters_the_kind(staff_client, admin_world):
    url = admin_url(Room, "changelist")
    page = staff_client.get(url).content.decode()
    assert "column-kind" in page and "kind__exact=dm" in page
    rooms = staff_client.get(url, {"kind__exact": "room"}).content.decode()
    assert admin_url(Room, "change", admin_world["public"].pk) in rooms
    dms = staff_client.get(url, {"kind__exact": "dm"}).content.decode()
    assert admin_url(Room, "change", admin_world["public"].pk) not in dms


def test_room_change_form_keeps_kind_and_dm_key(staff_client, admin_world):
    """Shown, not editable: the form saves without them and leaves them as they were."""
    room = admin_world["public"]
    url = admin_url(Room, "change", room.pk)
    page = staff_client.get(url).content.decode()
    assert 'name="kind"' not in page and 'name="dm_key"' not in page
    data = {
        "project": room.project_id, "slug": room.slug, "name": "renamed", "topic": room.topic,
        "created_by": room.created_by_id or "", "members-TOTAL_FORMS": "0", "members-INITIAL_FORMS": "0",
        "kind": "dm", "dm_key": "1,2",
    }  # fmt: skip
    assert staff_client.post(url, data).status_code == 302
    saved = Room.objects.get(pk=room.pk)
    assert (saved.name, saved.kind, saved.dm_key) == ("renamed", Room.Kind.ROOM, None)


def test_non_staff_is_sent_to_the_admin_login(admin_world):
    client = Client()
    client.force_login(admin_world["member"])
    for url in (reverse("admin:index"), admin_url(Message, "changelist"), admin_url(Project, "changelist")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_is_sent_to_the_admin_login(db):
    response = Client().get(admin_url(Message, "changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def message_changelist_queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(admin_url(Message, "changelist"))
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_message_changelist_query_count_does_not_grow_with_messages(staff_client, admin_world, make_user, make_message):
    world = admin_world
    authors = [world["member"], world["owner"], world["admin"]]
    rooms = [world["public"], world["private"]]
    for i in range(3):  # 5 messages
        make_message(rooms[0], authors[i % 3])
    few = message_changelist_queries(staff_client)

    for i in range(45):  # 50 messages, many rooms and authors
        author = make_user()
        Membership.objects.create(project=world["project"], user=author)
        make_message(rooms[0], author)
    more_rooms = [
        room_services.room_create(project=world["project"], user=world["owner"], name=f"extra {i}") for i in range(5)
    ]
    for room in more_rooms:
        make_message(Room.objects.select_related("project").get(pk=room.pk), world["owner"])
    assert Message.objects.count() >= 55
    many = message_changelist_queries(staff_client)
    assert many == few


@pytest.mark.parametrize("model", [Room, RoomMember, Membership, ApiToken, Project, User])
def test_other_changelists_query_count_does_not_grow(staff_client, admin_world, make_user, make_token, model):
    first = len(_captured(staff_client, admin_url(model, "changelist")))
    for _ in range(10):
        user = make_user()
        Membership.objects.create(project=admin_world["project"], user=user)
        room_services.room_member_add(room=admin_world["private"], username=user.username, by=admin_world["insider"])
        make_token(user)
    assert len(_captured(staff_client, admin_url(model, "changelist"))) == first


def _captured(client: Client, url: str) -> list[dict[str, Any]]:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return ctx.captured_queries


@pytest.mark.parametrize("model", [Reaction, Pin, SavedMessage])
def test_reaction_pin_and_saved_changelists_query_count_does_not_grow(
    staff_client, admin_world, make_user, make_message, model
):
    url = admin_url(model, "changelist")
    first = len(_captured(staff_client, url))
    world = admin_world
    for i in range(10):  # each row with its own message, author, room, user and pinner
        user = make_user()
        Membership.objects.create(project=world["project"], user=user, role=Membership.Role.ADMIN)
        room = room_services.room_create(project=world["project"], user=user, name=f"busy {i}")
        message = make_message(Room.objects.select_related("project").get(pk=room.pk), user)
        Reaction.objects.create(message=message, user=user, emoji="\N{PARTY POPPER}")
        Pin.objects.create(room_id=room.pk, message=message, pinned_by=user)
        SavedMessage.objects.create(user=user, message=message)
    assert model.objects.count() == 11
    page = _captured(staff_client, url)
    assert len(page) == first
