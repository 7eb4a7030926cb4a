"""Admin for rooms, room members, messages, reactions, pins, saved messages and API tokens.

Built for tables of millions of rows: every changelist selects its foreign
keys in the same query (no query per row), foreign keys are edited with
autocomplete widgets (no <select> of every user), and the big tables skip the
second, unfiltered COUNT(*).

Writes that have rules (sequence numbers, broadcasts, token secrets) belong
to chat.services, so the admin does not create rooms, messages or tokens and
shows messages read-only: it is for looking things up and light edits.
Reactions, pins and saved messages are view-only: each of their writes tells
open sockets (chat.services), which a change made here would not.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import Truncator

from chat.models import ApiToken, Message, Notice, Pin, Reaction, Room, RoomMember, RoomMute, SavedMessage, Upload


class RoomMemberInline(admin.TabularInline):
    """A room's members: who reads it while it is private, and who stays when it is made private."""

    model = RoomMember
    extra = 0
    autocomplete_fields = ("user",)
    readonly_fields = ("joined_at",)
    verbose_name = "member (reads the room when it is private)"


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "slug", "project", "kind", "is_private", "last_message_seq", "last_message_at")
    list_select_related = ("project",)
    list_filter = ("kind", "is_private")
    search_fields = ("name", "slug", "project__slug")
    autocomplete_fields = ("project", "created_by")
    # A DM's kind and key say whose conversation it is: never retyped by hand.
    readonly_fields = ("kind", "dm_key", "created_at", "last_message_seq", "last_message_at", "messages_deleted")
    inlines = (RoomMemberInline,)
    ordering = ("-id",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(RoomMember)
class RoomMemberAdmin(admin.ModelAdmin):
    list_display = ("id", "room", "user", "joined_at")
    list_select_related = ("room", "user")
    search_fields = ("user__username", "room__slug")
    autocomplete_fields = ("room", "user")
    readonly_fields = ("joined_at",)
    ordering = ("-id",)
    show_full_result_count = False


class MessageChangelistQuerySet(QuerySet):
    """Messages for the admin changelist, with a date drill-down that does not scan the table.

    The date hierarchy asks for the distinct years (then months) that have
    messages: a DISTINCT over every row, most of a second per million
    messages. A chat has messages in every month between its first and its
    last one, so those months are listed from the two bounds instead (an empty
    month, should one exist, just shows an empty page). Days, within one
    month, are still looked up exactly.
    """

    def datetimes(self, field_name: str, kind: str, order: str = "ASC", tzinfo: Any = None) -> Any:
        if kind not in ("year", "month"):
            return super().datetimes(field_name, kind, order, tzinfo)
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        first, last = (timezone.localtime(bounds[k], tzinfo) for k in ("first", "last"))
        tz = first.tzinfo
        if kind == "year":
            points = [datetime.datetime(y, 1, 1, tzinfo=tz) for y in range(first.year, last.year + 1)]
        else:
            points = []
            y, m = first.year, first.month
            while (y, m) <= (last.year, last.month):
                points.append(datetime.datetime(y, m, 1, tzinfo=tz))
                y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return points if order == "ASC" else points[::-1]


class MessageChangeList(ChangeList):
    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        # With a search term the drill-down bounds would scan every matching
        # row twice more; searching is enough of a filter on its own.
        if self.query:
            self.date_hierarchy = None


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "room", "seq", "author", "excerpt", "created_at", "edited_at", "deleted_at")
    list_display_links = ("id", "excerpt")
    list_select_related = ("room", "author")
    # Exact username match (a unique index) or a word in the body.
    search_fields = ("=author__username", "body")
    date_hierarchy = "created_at"
    list_filter = (("deleted_at", admin.EmptyFieldListFilter),)
    autocomplete_fields = ("room", "author")
    fields = ("room", "seq", "author", "body", "created_at", "edited_at", "deleted_at", "client_id")
    readonly_fields = fields
    ordering = ("-id",)
    show_full_result_count = False
    # Ordering by another column would sort a million rows for one page.
    sortable_by = ()

    @admin.display(description="body")
    def excerpt(self, obj: Message) -> str:
        return Truncator(obj.body).chars(80)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        qs = super().get_queryset(request)
        return MessageChangelistQuerySet(model=qs.model, query=qs.query, using=qs.db)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return MessageChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Messages are soft-deleted through chat.services.messages.message_delete, which
        # also tells connected clients; a hard delete would leave a hole in seq.
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "user", "created_at", "last_used_at")
    list_select_related = ("user",)
    search_fields = ("name", "user__username")
    autocomplete_fields = ("user",)
    # Only the SHA-256 of a key is stored; the raw key was shown once, at creation.
    fields = ("user", "name", "key_hash", "created_at", "last_used_at")
    readonly_fields = ("user", "key_hash", "created_at", "last_used_at")
    ordering = ("-id",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class ViewOnlyAdmin(admin.ModelAdmin):
    """Looked up, never written here: the services' writes also publish to open sockets."""

    ordering = ("-id",)
    show_full_result_count = False
    # Ordering by another column would sort the whole table for one page.
    sortable_by = ()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Reaction)
class ReactionAdmin(ViewOnlyAdmin):
    list_display = ("id", "emoji", "message", "user", "created_at")
    list_select_related = ("message", "user")
    search_fields = ("=user__username", "=emoji")
    raw_id_fields = ("message", "user")


@admin.register(Pin)
class PinAdmin(ViewOnlyAdmin):
    list_display = ("id", "room", "message", "excerpt", "pinned_by", "created_at")
    list_select_related = ("room", "message", "pinned_by")
    search_fields = ("=room__slug", "=pinned_by__username")
    raw_id_fields = ("room", "message", "pinned_by")

    @admin.display(description="message body")
    def excerpt(self, obj: Pin) -> str:
        return Truncator(obj.message.body).chars(80)


@admin.register(SavedMessage)
class SavedMessageAdmin(ViewOnlyAdmin):
    list_display = ("id", "user", "message", "created_at")
    list_select_related = ("user", "message")
    search_fields = ("=user__username",)
    raw_id_fields = ("user", "message")


@admin.register(Upload)
class UploadAdmin(ViewOnlyAdmin):
    """Shared files: staff see what was shared where, and by whom (deleting a room deletes its files)."""

    list_display = ("id", "name", "room", "uploader", "content_type", "size", "message", "created_at")
    list_select_related = ("room", "uploader")
    list_filter = ("content_type",)
    search_fields = ("=room__slug", "=uploader__username", "name")
    raw_id_fields = ("room", "uploader", "message")


@admin.register(Notice)
class NoticeAdmin(ViewOnlyAdmin):
    """Mentions and DMs the worker notified people of, and when the digest dealt with each."""

    list_display = ("id", "user", "room", "message", "created_at", "handled_at")
    list_select_related = ("user", "room")
    search_fields = ("=user__username",)
    raw_id_fields = ("user", "room", "message")


@admin.register(RoomMute)
class RoomMuteAdmin(ViewOnlyAdmin):
    list_display = ("id", "user", "room", "created_at")
    list_select_related = ("user", "room")
    search_fields = ("=user__username", "=room__slug")
    raw_id_fields = ("user", "room")

