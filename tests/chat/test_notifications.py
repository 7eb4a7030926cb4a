"""Notifications past the page: mutes, do not disturb, notices and the e-mail digest (against a real SMTP server).

The SMTP server is aiosmtpd (PyPI), started on a free loopback port: the
digest goes through Django's SMTP backend to it as to any mail server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import datetime, timedelta
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.test import Client
from django.utils import timezone

from chat.background import BackgroundConsumer
from chat.models import Notice, NotificationSettings, RoomMute
from chat.selectors import history as history_selectors
from chat.services import messages as message_services
from chat.services import notifications as notification_services
from chat.services import rooms as room_services
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


class _Inbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.mails.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp(settings) -> Iterator[_Inbox]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.CHAT_PUBLIC_URL = "https://chat.example"
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def people(chat_world) -> dict[str, Any]:
    for name in ("owner", "member", "insider"):
        user = chat_world[name]
        user.email = f"{name}@example.com"
        user.save(update_fields=["email"])
    return chat_world


def mention(room: Any, author: Any, body: str) -> Any:
    """A message, and the worker's handling of it (as chat_worker does), here in the test's process."""
    message, _ = message_services.message_create(room=room, author=author, body=body)
    BackgroundConsumer().message_created({"message_id": message.id, "room_id": room.id})
    return message


def later(minutes: int = 31) -> Any:
    return timezone.now() + timedelta(minutes=minutes)


def test_a_mention_left_unread_is_e_mailed_once(people, smtp):
    room, owner, member = people["public"], people["owner"], people["member"]
    message = mention(room, owner, "@member can you review the **plan**?")
    assert Notice.objects.filter(user=member, message=message, handled_at=None).exists()
    assert notification_services.digests_send(now=timezone.now()) == 0  # not yet: it may still be read
    assert notification_services.digests_send(now=later()) == 1
    (mail,) = smtp.mails
    assert mail.rcpt_tos == ["member@example.com"]
    text = mail.content.decode()
    assert "Subject: 1 unread mention and direct message" in text
    assert "owner in #general:" in text and "@member can you review the **plan**?" in text
    assert f"https://chat.example/p/{room.project.slug}/r/{room.slug}/" in text
    assert "https://chat.example/account/notifications/" in text
    assert notification_services.digests_send(now=later(60)) == 0 and len(smtp.mails) == 1  # never twice


def test_what_was_read_muted_deleted_or_unwanted_is_not_e_mailed(people, smtp):
    room, private, owner, member, insider = people["public"], people["private"], people["owner"], people["member"], people["insider"]
    read = mention(room, owner, "@member read this one")
    room_services.room_mark_read(room=room, user=member, last_read_message_id=read.id)
    gone = mention(private, insider, "@owner soon deleted")
    message_services.message_delete(message=history_selectors.message_get_for_user(user=insider, message_id=gone.id), by=insider)
    notification_services.notification_settings_update(user=insider, digest=False)
    mention(room, owner, "@insider you turned e-mails off")
    assert notification_services.digests_send(now=later()) == 0 and smtp.mails == []
    assert not Notice.objects.filter(handled_at=None).exists()  # dealt with all the same


def test_a_muted_room_sends_no_mention_and_keeps_no_notice(people, smtp):
    room, owner, member = people["public"], people["owner"], people["member"]
    assert notification_services.room_mute(user=member, room=room) is True
    assert notification_services.room_mute(user=member, room=room) is False
    mention(room, owner, "@member in a muted room")
    assert not Notice.objects.exists()
    assert notification_services.room_unmute(user=member, room=room) is True
    mention(room, owner, "@member after unmuting")
    assert Notice.objects.filter(user=member).count() == 1


def test_do_not_disturb_holds_the_digest_until_it_ends(people, smtp):
    room, owner, member = people["public"], people["owner"], people["member"]
    notification_services.notification_settings_update(user=member, quiet_until=timezone.now() + timedelta(hours=2))
    wanted, quiet = notification_services.notified(room=room, users=[member, people["insider"]])
    assert quiet == {member.id} and len(wanted) == 2
    mention(room, owner, "@member while you rest")
    assert notification_services.digests_send(now=later()) == 0
    assert Notice.objects.filter(user=member, handled_at=None).exists()  # waiting, not dropped
    assert notification_services.digests_send(now=timezone.now() + timedelta(hours=3)) == 1
    assert "while you rest" in smtp.mails[0].content.decode()


def test_a_direct_message_notifies_its_other_people(people, smtp):
    from chat.services import dms as dm_services

    owner, member = people["owner"], people["member"]
    dm, _ = dm_services.dm_get_or_create(project=people["project"], by=owner, users=["member"])
    mention(dm, owner, "lunch tomorrow?")
    assert [n.user_id for n in Notice.objects.all()] == [member.id]
    assert notification_services.digests_send(now=later()) == 1
    assert "owner in a direct message:" in smtp.mails[0].content.decode()


def test_two_workers_never_send_the_same_notice(people, smtp):
    room, owner = people["public"], people["owner"]
    for i in range(5):
        mention(room, owner, f"@member number {i}")
    results: list[int] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(notification_services.digests_send(now=later()))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) in ([0, 1], [1, 1]) and len(smtp.mails) == sum(results)
    body = "".join(mail.content.decode() for mail in smtp.mails)
    assert all(body.count(f"@member number {i}") == 1 for i in range(5))


def test_the_api_and_the_pages_change_the_settings(people, api_client, smtp):
    room, private, member = people["public"], people["private"], people["member"]
    client = api_client(member)
    assert client.get("/api/v1/me/notifications").json() == {"digest": True, "quiet_until": None, "muted_rooms": []}
    until = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    changed = client.put("/api/v1/me/notifications", {"digest": False, "quiet_until": until.isoformat()}, content_type="application/json")
    assert changed.status_code == 200 and changed.json()["digest"] is False and changed.json()["quiet_until"] == until.isoformat()
    too_far = client.put("/api/v1/me/notifications", {"quiet_until": (timezone.now() + timedelta(days=90)).isoformat()}, content_type="application/json")
    assert too_far.status_code == 400 and too_far.json()["code"] == "invalid_quiet_until"
    odd = client.put("/api/v1/me/notifications", {"quiet_until": "0179-04-27T12:05:45+22:38"}, content_type="application/json")
    assert odd.status_code == 200 and odd.json()["quiet_until"] is None  # long past, in an odd zone: it simply ends
    shifted = (timezone.now() + timedelta(hours=2)).astimezone(timezone.get_fixed_timezone(22 * 60 + 38)).replace(microsecond=0)
    stored = client.put("/api/v1/me/notifications", {"quiet_until": shifted.isoformat()}, content_type="application/json").json()
    assert datetime.fromisoformat(stored["quiet_until"]) == shifted  # the same moment, kept in UTC
    ended = client.put("/api/v1/me/notifications", {"quiet_until": None}, content_type="application/json").json()
    assert ended["quiet_until"] is None and ended["digest"] is False  # what was left out stayed
    assert client.put(f"/api/v1/rooms/{room.id}/mute").status_code == 201
    assert client.put(f"/api/v1/rooms/{room.id}/mute").status_code == 200
    assert client.get("/api/v1/me/notifications").json()["muted_rooms"] == [room.id]
    assert client.put(f"/api/v1/rooms/{private.id}/mute").json()["code"] == "not_found"  # not a member of it
    assert client.delete(f"/api/v1/rooms/{room.id}/mute").status_code == 204

    page = Client()
    assert page.login(username=member.username, password=PASSWORD)
    room_url = f"/p/{room.project.slug}/r/{room.slug}/"
    assert 'id="mute-toggle" aria-pressed="false"' in page.get(room_url).content.decode()
    assert page.post(f"{room_url}mute/", {"muted": "1"}).status_code == 302
    assert RoomMute.objects.filter(user=member, room=room).exists()
    assert 'id="mute-toggle" aria-pressed="true"' in page.get(room_url).content.decode()  # a new page, not a stale 304
    settings_page = page.get("/account/notifications/").content.decode()
    assert "#general" in settings_page and 'name="digest"' in settings_page
    page.post("/account/notifications/", {"action": "unmute", "room": str(room.id)})
    assert not RoomMute.objects.filter(user=member).exists()
    page.post("/account/notifications/", {"action": "settings", "digest": "on", "quiet": "8"})
    prefs = NotificationSettings.objects.get(user=member)
    assert prefs.digest is True and timezone.now() + timedelta(hours=7) < prefs.quiet_until < timezone.now() + timedelta(hours=9)


def test_the_worker_sends_digests_by_itself(people, smtp, settings):
    from chat.digests import DigestSender

    settings.CHAT_DIGEST_DELAY = 0
    mention(people["public"], people["owner"], "@member from the worker's own loop")
    sender = DigestSender(every=0.2)
    sender.start()
    try:
        for _ in range(100):
            if smtp.mails:
                break
            asyncio.run(asyncio.sleep(0.05))
    finally:
        sender.stop()
        sender.join(5)
    assert len(smtp.mails) == 1 and "from the worker's own loop" in smtp.mails[0].content.decode()
