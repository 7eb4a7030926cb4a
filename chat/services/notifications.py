"""Notifications beyond the open page: who hears of what (mutes, do not disturb) and the e-mail digest.

The background worker (chat.background) decides who is notified of a new
message (the @mentioned, a DM's other people); :func:`notices_record` keeps
a Notice for each of them unless they muted the room. :func:`digests_send`,
run by the worker every ``NOTIFY_DIGEST_CHECK`` seconds (and by ``manage.py
send_digests``), e-mails each user the notices still unread
``NOTIFY_DIGEST_DELAY`` minutes later: one e-mail per user and run, never
twice for a notice, never while they asked not to be disturbed (their
notices wait), and nothing they read meanwhile or asked not to get.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import Truncator

from chat.models import NotificationSettings, Notice, ReadMarker, Room, RoomMute
from chat.selectors import notifications as notification_selectors
from chatsite.errors import InvalidInput
from chatsite.users import user_display_name

# Do not disturb lasts at most this long (a date far ahead is a typo, not a wish).
QUIET_MAX = timedelta(days=30)
# Notices in one e-mail, the newest; a digest mentions how many more there were.
DIGEST_LINES = 20


def notification_settings_update(*, user: Any, digest: bool | None = None, quiet_until: Any = ...) -> NotificationSettings:
    """Change the digest and do-not-disturb settings; ``quiet_until`` None ends do not disturb."""
    current = notification_selectors.notification_settings_get(user=user)
    if digest is not None:
        current.digest = bool(digest)
    if quiet_until is not ...:
        if quiet_until is not None:
            if not isinstance(quiet_until, datetime) or timezone.is_naive(quiet_until):
                raise InvalidInput("'quiet_until' must be a date and time with its time zone.", code="invalid_quiet_until")
            try:
                # Stored in UTC: the database takes no offset it does not know (+22:38, say).
                quiet_until = quiet_until.astimezone(dt_timezone.utc)
            except OverflowError:
                raise InvalidInput("'quiet_until' is out of range.", code="invalid_quiet_until") from None
            if quiet_until > timezone.now() + QUIET_MAX:
                raise InvalidInput("Do not disturb lasts at most 30 days.", code="invalid_quiet_until")
            if quiet_until <= timezone.now():
                quiet_until = None  # a time already past ends do not disturb
        current.quiet_until = quiet_until
    current.save()
    return current


def room_mute(*, user: Any, room: Room) -> bool:
    """Mute ``room`` for ``user`` (the caller checked they read it); True when it was not muted."""
    _, created = RoomMute.objects.get_or_create(user=user, room=room)
    return created


def room_unmute(*, user: Any, room: Room) -> bool:
    """Unmute; True when it was muted."""
    deleted, _ = RoomMute.objects.filter(user=user, room=room).delete()
    return bool(deleted)


def notified(*, room: Room, users: list[Any]) -> tuple[list[Any], set[int]]:
    """Of ``users`` to notify in ``room``: those who did not mute it, and which of them are in do not disturb."""
    muted = set(RoomMute.objects.filter(room=room, user__in=users).values_list("user_id", flat=True))
    wanted = [user for user in users if user.id not in muted]
    quiet = set(
        NotificationSettings.objects.filter(user__in=wanted, quiet_until__gt=timezone.now()).values_list("user_id", flat=True)
    )
    return wanted, quiet


def notices_record(*, message: Any, users: list[Any]) -> None:
    """Keep a notice of ``message`` for each of ``users`` (the worker; once per user and message)."""
    Notice.objects.bulk_create(
        [Notice(user=user, message=message, room_id=message.room_id) for user in users], ignore_conflicts=True
    )


def digests_send(*, now: datetime | None = None) -> int:
    """E-mail every user their notices still unread past the delay; the number of e-mails sent.

    Rows are taken with ``FOR UPDATE SKIP LOCKED``, so two workers never send
    the same notice. A notice is handled (never looked at again) when it is
    e-mailed, read, in a room muted since, or its user wants no digest.
    """
    now = now or timezone.now()
    due_before = now - timedelta(seconds=settings.CHAT_DIGEST_DELAY)
    sent = 0
    with transaction.atomic():
        pending = list(
            Notice.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(handled_at__isnull=True, created_at__lte=due_before)
            .select_related("message__author", "room__project", "user")
            .order_by("created_at")[:2000]
        )
        if not pending:
            return 0
        by_user: dict[int, list[Notice]] = {}
        for notice in pending:
            by_user.setdefault(notice.user_id, []).append(notice)
        users = list(by_user)
        prefs = {p.user_id: p for p in NotificationSettings.objects.filter(user__in=users)}
        muted = set(RoomMute.objects.filter(user__in=users).values_list("user_id", "room_id"))
        read = dict(
            ((user_id, room_id), last)
            for user_id, room_id, last in ReadMarker.objects.filter(user__in=users).values_list(
                "user_id", "room_id", "last_read_message_id"
            )
        )
        handled: list[int] = []
        emails: list[EmailMessage] = []
        for user_id, notices in by_user.items():
            pref = prefs.get(user_id)
            if pref is not None and pref.quiet_until is not None and pref.quiet_until > now:
                continue  # they wait until do not disturb ends
            wanted = [
                n for n in notices
                if n.message.deleted_at is None and (user_id, n.room_id) not in muted
                and n.message_id > read.get((user_id, n.room_id), 0)
            ]  # fmt: skip
            handled += [n.id for n in notices]
            user = notices[0].user
            if wanted and (pref is None or pref.digest) and user.email and user.is_active:
                emails.append(_digest_email(user, wanted))
        if emails:
            with get_connection() as connection:
                sent = connection.send_messages(emails) or 0
        Notice.objects.filter(id__in=handled).update(handled_at=now)
    return sent


def _digest_email(user: Any, notices: list[Notice]) -> EmailMessage:
    count = len(notices)
    lines = []
    for notice in notices[-DIGEST_LINES:]:
        message, room = notice.message, notice.room
        where = "a direct message" if room.kind == Room.Kind.DM else f"#{room.name}"
        link = settings.CHAT_PUBLIC_URL + reverse("room-detail", args=[room.project.slug, room.slug])
        text = Truncator(" ".join(message.body.split())).chars(200)
        lines.append(f"{user_display_name(message.author)} in {where}:\n  {text}\n  {link}")
    more = f"\n\n…and {count - DIGEST_LINES} more." if count > DIGEST_LINES else ""
    body = (
        f"Hello {user_display_name(user)},\n\nWhile you were away you were mentioned or sent a direct message "
        f"{count} time{'s' if count != 1 else ''}:\n\n" + "\n\n".join(lines) + more
        + "\n\nYou can turn these e-mails off in your notification settings: "
        + settings.CHAT_PUBLIC_URL + reverse("account-notifications") + "\n"
    )  # fmt: skip
    subject = f"{count} unread mention{'s' if count != 1 else ''} and direct message{'s' if count != 1 else ''}"
    return EmailMessage(subject=subject, body=body, to=[user.email])

