"""Cache coherence for writes that bypass the services (the admin, a shell, data migrations).

The services invalidate exactly what they change; these receivers are the
safety net for model saves and deletes made any other way. They run on
commit, like the services' own invalidation.
"""

from __future__ import annotations

from typing import Any

from chat import selectors
from chat.serialization import USER_DISPLAY_FIELDS
from perf.cache import invalidate_on_commit
from projects.selectors import membership_cache_key, project_cache_key, project_stats_key


def project_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    room_keys = [selectors.room_cache_key(rid) for rid in instance.rooms.values_list("id", flat=True)] if instance.pk else []
    invalidate_on_commit(project_cache_key(instance.slug), project_stats_key(instance.pk), *room_keys)


def membership_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    invalidate_on_commit(
        membership_cache_key(instance.project_id, instance.user_id),
        selectors.room_list_key(instance.project_id, instance.user_id),
        project_stats_key(instance.project_id),
        patterns=[selectors.room_access_pattern(instance.user_id)],
    )


def room_member_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    room = instance.room
    invalidate_on_commit(
        selectors.room_access_key(instance.user_id, instance.room_id),
        selectors.room_list_key(room.project_id, instance.user_id),
    )


def room_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    invalidate_on_commit(
        selectors.room_cache_key(instance.pk),
        project_stats_key(instance.project_id),
        patterns=[selectors.room_list_pattern(instance.project_id), selectors.room_access_room_pattern(instance.pk)],
    )


def token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    invalidate_on_commit(selectors.token_cache_key(instance.key_hash))


def user_changed(sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    """A user was saved (deactivated, renamed, made staff): drop their cached token lookups and profile.

    When their display data may have changed, the rendered history pages
    that show it go too (the profiles stamp); a login, which saves only
    ``last_login``, leaves them.
    """
    from chat.models import ApiToken

    hashes = ApiToken.objects.filter(user_id=instance.pk).values_list("key_hash", flat=True) if instance.pk else []
    keys = [selectors.profile_key(instance.pk), *(selectors.token_cache_key(h) for h in hashes)]
    if not created and (update_fields is None or set(USER_DISPLAY_FIELDS) & set(update_fields)):
        keys.append(selectors.profiles_stamp_key())
    invalidate_on_commit(*keys)


def user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A user was deleted, and their messages with them: no rendered page may show those any more."""
    invalidate_on_commit(selectors.profile_key(instance.pk), selectors.profiles_stamp_key())


def connect() -> None:
    from django.db.models.signals import post_delete, post_save

    from django.contrib.auth import get_user_model

    from chat.models import ApiToken, Room, RoomMember
    from projects.models import Membership, Project

    post_delete.connect(token_deleted, sender=ApiToken, dispatch_uid="chat.cache.token.delete")
    post_save.connect(user_changed, sender=get_user_model(), dispatch_uid="chat.cache.user.save")
    post_delete.connect(user_deleted, sender=get_user_model(), dispatch_uid="chat.cache.user.delete")

    for signal in (post_save, post_delete):
        name = signal is post_save and "save" or "delete"
        signal.connect(project_changed, sender=Project, dispatch_uid=f"chat.cache.project.{name}")
        signal.connect(membership_changed, sender=Membership, dispatch_uid=f"chat.cache.membership.{name}")
        signal.connect(room_member_changed, sender=RoomMember, dispatch_uid=f"chat.cache.roommember.{name}")
        signal.connect(room_changed, sender=Room, dispatch_uid=f"chat.cache.room.{name}")
