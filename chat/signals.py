"""Reactions to changes of access and credentials, whoever makes them (services, the admin, a shell).

Two jobs, both after commit:

* cache coherence: the services invalidate exactly what they change; these
  receivers are the safety net for model saves and deletes made any other way;
* open sockets: when access ends (a membership or room membership removed, a
  room made private or deleted) or credentials end (a token deleted, a
  logout, a user deactivated or deleted), a control event reaches the user's
  (or the room's) sockets on every server process, which check again and
  drop what is no longer allowed (chat.consumers). Each publish is registered
  after the invalidation, so the check never reads a stale entry.
"""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from chat import cache_keys, events
from chatsite.users import USER_DISPLAY_FIELDS
from perf.cache import invalidate_on_commit
from projects.selectors import membership_cache_key, project_cache_key


def project_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    room_keys = [cache_keys.room_cache_key(rid) for rid in instance.rooms.values_list("id", flat=True)] if instance.pk else []
    invalidate_on_commit(project_cache_key(instance.slug), *room_keys)


def _on_commit(func: Any, **kwargs: Any) -> None:
    transaction.on_commit(partial(func, **kwargs), robust=True)


def membership_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    invalidate_on_commit(
        membership_cache_key(instance.project_id, instance.user_id),
        cache_keys.room_list_key(instance.project_id, instance.user_id),
        patterns=[cache_keys.room_access_pattern(instance.user_id)],
    )


def membership_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A member left or was removed (the service, the admin, a shell): their private-room memberships in the project end too."""
    from chat.models import RoomMember

    RoomMember.objects.filter(room__project_id=instance.project_id, user_id=instance.user_id).delete()
    membership_changed(sender, instance, **kwargs)
    _on_commit(events.publish_user_control, user_id=instance.user_id, kind=events.ACCESS_CHECK, project=instance.project_id)


def room_member_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    room = instance.room
    invalidate_on_commit(
        cache_keys.room_access_key(instance.user_id, instance.room_id),
        cache_keys.room_list_key(room.project_id, instance.user_id),
    )


def room_member_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    room_member_changed(sender, instance, **kwargs)
    _on_commit(events.publish_user_control, user_id=instance.user_id, kind=events.ACCESS_CHECK, rooms=[instance.room_id])


def room_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    invalidate_on_commit(
        cache_keys.room_cache_key(instance.pk),
        patterns=[cache_keys.room_list_pattern(instance.project_id), cache_keys.room_access_room_pattern(instance.pk)],
    )
    # A private room (perhaps just made private) or a deleted one: its subscribers check again.
    if instance.is_private or kwargs.get("signal") is post_delete:
        _on_commit(events.publish_room_control, room_id=instance.pk, kind=events.ACCESS_CHECK)


def project_created(sender: Any, project: Any, user: Any, **kwargs: Any) -> None:
    """Every new project starts with a public room "general" (inside the project's transaction)."""
    from chat.services.rooms import room_create

    room_create(project=project, user=user, name="general", topic="Everything and anything")


def token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    invalidate_on_commit(cache_keys.token_cache_key(instance.key_hash))
    _on_commit(events.publish_user_control, user_id=instance.user_id, kind=events.AUTH_CHECK)


def user_changed(sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    """A user was saved (deactivated, renamed, made staff): drop their cached token lookups and profile.

    When their display data may have changed, the rendered history pages
    that show it go too (the profiles stamp); a login, which saves only
    ``last_login``, leaves them.
    """
    from chat.models import ApiToken

    hashes = ApiToken.objects.filter(user_id=instance.pk).values_list("key_hash", flat=True) if instance.pk else []
    keys = [cache_keys.profile_key(instance.pk), *(cache_keys.token_cache_key(h) for h in hashes)]
    if not created and (update_fields is None or set(USER_DISPLAY_FIELDS) & set(update_fields)):
        keys.append(cache_keys.profiles_stamp_key())
    invalidate_on_commit(*keys)
    # Deactivated, a new password, …: their sockets check their credentials again (a login,
    # which saves only last_login, changes none).
    if not created and set(update_fields or ()) != {"last_login"}:
        _on_commit(events.publish_user_control, user_id=instance.pk, kind=events.AUTH_CHECK)


def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A user was deleted, and their messages with them: no rendered page may show those any more."""
    invalidate_on_commit(cache_keys.profile_key(instance.pk), cache_keys.profiles_stamp_key())
    _on_commit(events.publish_user_control, user_id=instance.pk, kind=events.AUTH_CHECK)


def session_key_digest(session_key: str) -> str:
    """How a session is named in a control event: the key itself never leaves the process."""
    return hashlib.sha256(session_key.encode()).hexdigest()


def user_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A session ends: its sockets close at once (the session is flushed right after this signal)."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if user is None or not key:
        return
    _on_commit(events.publish_user_control, user_id=user.pk, kind=events.AUTH_CHECK, session=session_key_digest(key))


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out as logged_out

    from chat.models import ApiToken, Room, RoomMember
    from projects import signals as project_signals
    from projects.models import Membership, Project

    post_delete.connect(token_deleted, sender=ApiToken, dispatch_uid="chat.cache.token.delete")
    post_save.connect(user_changed, sender=get_user_model(), dispatch_uid="chat.cache.user.save")
    post_delete.connect(user_deleted, sender=get_user_model(), dispatch_uid="chat.cache.user.delete")
    logged_out.connect(user_logged_out, dispatch_uid="chat.sockets.user.logout")

    project_signals.project_created.connect(project_created, dispatch_uid="chat.rooms.project.created")
    post_save.connect(membership_changed, sender=Membership, dispatch_uid="chat.cache.membership.save")
    post_delete.connect(membership_deleted, sender=Membership, dispatch_uid="chat.cache.membership.delete")
    post_save.connect(room_member_changed, sender=RoomMember, dispatch_uid="chat.cache.roommember.save")
    post_delete.connect(room_member_deleted, sender=RoomMember, dispatch_uid="chat.cache.roommember.delete")
    for signal in (post_save, post_delete):
        name = signal is post_save and "save" or "delete"
        signal.connect(project_changed, sender=Project, dispatch_uid=f"chat.cache.project.{name}")
        signal.connect(room_changed, sender=Room, dispatch_uid=f"chat.cache.room.{name}")
