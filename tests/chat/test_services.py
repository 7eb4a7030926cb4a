from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction

from chat.models import Message, ReadMarker, Room, RoomMember
from chat.selectors import history as history_selectors
from chat.selectors import rooms as room_selectors
from chat.services import messages as message_services
from chat.services import rooms as room_services
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.chat.polling import poll_after_highest


def test_message_create_assigns_increasing_seq_and_bumps_room(chat_world, make_message):
    room, member = chat_world["public"], chat_world["member"]
    first = make_message(room, member)
    second = make_message(room, member)
    assert (first.seq, second.seq) == (1, 2)
    assert second.id > first.id
    room.refresh_from_db()
    assert room.last_message_seq == 2
    assert room.last_message_at == second.created_at


def test_message_create_duplicate_client_id_returns_original(chat_world):
    room, member = chat_world["public"], chat_world["member"]
    first, created = message_services.message_create(room=room, author=member, body="hi", client_id="c-1")
    again, created_again = message_services.message_create(room=room, author=member, body="hi (retry)", client_id="c-1")
    assert created and not created_again
    assert again.id == first.id and again.body == "hi"
    assert Message.objects.filter(author=member, client_id="c-1").count() == 1
    room.refresh_from_db()
    assert room.last_message_seq == 1  # the retry left no hole in the sequence


def test_same_client_id_for_another_room_is_a_conflict(chat_world, make_room):
    member, room = chat_world["member"], chat_world["public"]
    other = make_room(chat_world["project"], creator=member, name="other")
    message_services.message_create(room=room, author=member, body="hi", client_id="c-2")
    with pytest.raises(Conflict):
        message_services.message_create(room=other, author=member, body="hi", client_id="c-2")


def test_client_ids_are_per_author(chat_world):
    room = chat_world["public"]
    a, _ = message_services.message_create(room=room, author=chat_world["member"], body="a", client_id="same")
    b, created = message_services.message_create(room=room, author=chat_world["owner"], body="b", client_id="same")
    assert created and a.id != b.id


@pytest.mark.parametrize(
    "body,code",
    [("", "empty_body"), ("   \n", "empty_body"), ("x" * 10_001, "body_too_long"), (123, "invalid_body"), (None, "invalid_body")],
)
def test_message_create_rejects_bad_bodies(chat_world, body, code):
    with pytest.raises(InvalidInput) as exc:
        message_services.message_create(room=chat_world["public"], author=chat_world["member"], body=body)
    assert exc.value.code == code
    assert not Message.objects.exists()


def test_message_of_exactly_max_length_is_accepted(chat_world, make_message):
    message = make_message(chat_world["public"], chat_world["member"], body="y" * 10_000)
    assert len(Message.objects.get(pk=message.pk).body) == 10_000


def test_archived_project_is_read_only(chat_world):
    project = chat_world["project"]
    project.archived = True
    project.save()
    room = Room.objects.select_related("project").get(pk=chat_world["public"].pk)
    with pytest.raises(Forbidden):
        message_services.message_create(room=room, author=chat_world["member"], body="hi")


def test_edit_and_delete_permissions(chat_world, make_message):
    message = make_message(chat_world["public"], chat_world["member"], body="original")

    def load(user):
        return history_selectors.message_get_for_user(user=user, message_id=message.id)

    with pytest.raises(Forbidden):
        message_services.message_edit(message=load(chat_world["insider"]), by=chat_world["insider"], body="x")
    edited = message_services.message_edit(message=load(chat_world["member"]), by=chat_world["member"], body="changed")
    assert edited.body == "changed" and edited.edited_at is not None
    # project admins moderate
    message_services.message_edit(message=load(chat_world["admin"]), by=chat_world["admin"], body="moderated")
    with pytest.raises(Forbidden):
        message_services.message_delete(message=load(chat_world["insider"]), by=chat_world["insider"])
    deleted = message_services.message_delete(message=load(chat_world["owner"]), by=chat_world["owner"])
    assert deleted.deleted_at is not None
    with pytest.raises(Conflict):
        message_services.message_edit(message=load(chat_world["member"]), by=chat_world["member"], body="after delete")


def test_broadcast_only_after_commit(chat_world, django_capture_on_commit_callbacks):
    room, member = chat_world["public"], chat_world["member"]
    with django_capture_on_commit_callbacks() as callbacks:
        try:
            with transaction.atomic():
                message_services.message_create(room=room, author=member, body="doomed")
                raise RuntimeError("rollback")
        except RuntimeError:
            pass
    assert callbacks == []
    with django_capture_on_commit_callbacks() as callbacks:
        message_services.message_create(room=room, author=member, body="kept")
    created = [c for c in callbacks if getattr(c, "func", None) is message_services._messages_created]
    assert len(created) == 1 and [m.body for m, _ in created[0].keywords["created"]] == ["kept"]


def test_room_mark_read_moves_forward_only_and_clamps(chat_world, make_message):
    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    messages = [make_message(room, owner) for _ in range(3)]
    assert room_services.room_mark_read(room=room, user=member, last_read_message_id=messages[1].id) == messages[1].id
    assert room_services.room_mark_read(room=room, user=member, last_read_message_id=messages[0].id) == messages[0].id
    assert ReadMarker.objects.get(room=room, user=member).last_read_message_id == messages[1].id
    assert room_services.room_mark_read(room=room, user=member, last_read_message_id=10**12) == messages[2].id


def test_room_create_slug_conflict(chat_world):
    with pytest.raises(Conflict):
        room_services.room_create(project=chat_world["project"], user=chat_world["member"], name="General")


def test_room_member_add_rules(chat_world):
    private = chat_world["private"]
    with pytest.raises(Forbidden):
        room_services.room_member_add(room=private, username="member", by=chat_world["member"])
    room_services.room_member_add(room=private, username="member", by=chat_world["insider"])
    assert RoomMember.objects.filter(room=private, user=chat_world["member"]).exists()
    room_services.room_member_add(room=private, username="admin1", by=chat_world["admin"])
    from chatsite.errors import NotFound

    with pytest.raises(NotFound):
        room_services.room_member_add(room=private, username="outsider", by=chat_world["insider"])


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_commit_in_id_order(make_user, make_project):
    """Once any reader has seen message N of a room, every earlier message is committed.

    Eight threads send into one room while a reader repeatedly fetches "everything
    after the highest id I have". If a lower id could commit after a higher one,
    the reader would skip it forever; the final comparison would show the hole.
    """
    owner = make_user("sender0")
    project = make_project(owner)
    room = Room.objects.select_related("project").get(project=project, slug="general")
    senders = [owner] + [make_user(f"sender{i}") for i in range(1, 8)]
    for user in senders[1:]:
        project.memberships.create(user=user)
    per_sender = 40
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def send(user):
        try:
            for i in range(per_sender):
                message_services.message_create(room=room, author=user, body=f"{user.username} {i}", client_id=f"{user.pk}-{i}")
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    reader = threading.Thread(target=poll_after_highest, args=(room.id, done, seen))
    reader.start()
    threads = [threading.Thread(target=send, args=(u,)) for u in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert not errors
    all_ids = list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))
    assert len(all_ids) == len(senders) * per_sender
    assert seen == all_ids  # nothing skipped, nothing repeated, in order
    seqs = list(Message.objects.filter(room=room).order_by("id").values_list("seq", flat=True))
    assert seqs == list(range(1, len(all_ids) + 1))


def test_room_member_remove_rules(chat_world):
    private, insider, member = chat_world["private"], chat_world["insider"], chat_world["member"]
    room_services.room_member_add(room=private, username="member", by=insider)
    # a plain member cannot remove someone else; a project admin can, and anyone can leave
    with pytest.raises(Forbidden):
        room_services.room_member_remove(room=private, user=member, by=insider)
    room_services.room_member_remove(room=private, user=member, by=chat_world["admin"])
    assert not RoomMember.objects.filter(room=private, user=member).exists()
    from chatsite.errors import NotFound

    with pytest.raises(NotFound):
        room_services.room_member_remove(room=private, user=member, by=member)
    # the last member of a private room stays: nobody could read or rejoin it otherwise
    with pytest.raises(Conflict) as exc:
        room_services.room_member_remove(room=private, user=insider, by=insider)
    assert exc.value.code == "last_member"


# --- what chat does when projects announces a change (chat.signals) ---------------------


def test_a_new_project_starts_with_its_general_room(make_user):
    from projects import services as project_services

    owner = make_user("founder")
    project = project_services.project_create(user=owner, name="Fresh")
    rooms = list(Room.objects.filter(project=project).values_list("slug", "is_private", "created_by_id"))
    assert rooms == [("general", False, owner.pk)]


@pytest.mark.parametrize("how", ["service", "admin"])
def test_leaving_a_project_ends_its_private_room_memberships_whoever_removes_it(chat_world, how):
    from projects import services as project_services
    from projects.models import Membership

    project, insider = chat_world["project"], chat_world["insider"]
    assert RoomMember.objects.filter(room=chat_world["private"], user=insider).exists()
    if how == "service":
        project_services.membership_remove(project=project, user=insider, by=chat_world["owner"])
    else:  # what the Django admin's delete does: the model's own delete, no service
        Membership.objects.get(project=project, user=insider).delete()
    assert not RoomMember.objects.filter(room__project=project, user=insider).exists()
    with pytest.raises(NotFound):
        room_selectors.room_get_for_user(room_id=chat_world["private"].pk, user=insider)
