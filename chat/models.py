from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from projects.models import Project


class Room(models.Model):
    """A conversation inside a project: public to project members, or private to its RoomMembers.

    ``last_message_seq`` is the room's event counter: every message takes its
    next value, and so does every other change of the room (a RoomChange: an
    edit, a delete, a reaction summary, a pin, an unpin), so that resume and
    gap fill replay one sequence in order. A writer takes this row's lock to
    bump it, which also makes message ids in one room commit in increasing
    order (see chat.services.messages.message_create).
    ``messages_deleted`` counts message_delete's: with the seq it names the
    room's cached unread entries, so a delete moves readers to new ones.

    A direct-message conversation is a private room of ``kind`` DM whose
    RoomMembers are its people; ``dm_key`` (their sorted user ids) makes the
    same set of people always find the same room, even when two of them
    start it at once.
    """

    class Kind(models.TextChoices):
        ROOM = "room", "Room"
        DM = "dm", "Direct message"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rooms", db_index=False)
    slug = models.SlugField(max_length=64, db_index=False)  # covered by room_project_slug_uniq
    name = models.CharField(max_length=100)
    topic = models.CharField(max_length=250, blank=True, default="")
    is_private = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_message_seq = models.BigIntegerField(default=0)
    messages_deleted = models.BigIntegerField(default=0, db_default=0)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.ROOM, db_default=Kind.ROOM)
    dm_key = models.CharField(max_length=100, null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # room by (project, slug) and the room list of a project
            models.UniqueConstraint(fields=["project", "slug"], name="room_project_slug_uniq"),
            # the one conversation of a set of people in a project (get-or-create under a race)
            models.UniqueConstraint(
                fields=["project", "dm_key"], condition=Q(dm_key__isnull=False), name="room_project_dm_key_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}/{self.slug}"


class RoomMember(models.Model):
    """Membership of a room: who may read a private room, and who stays if a public room is made private.

    Public rooms are read by every project member whether or not they are
    room members; reading a room never makes anyone a member (ReadMarker
    holds read state).
    """

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="members", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships", db_index=False)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # private-room membership check (room, user) and the member list of a room
            models.UniqueConstraint(fields=["room", "user"], name="roommember_room_user_uniq"),
        ]
        indexes = [
            # a user's room memberships (leaving a project removes them)
            models.Index(fields=["user", "room"], name="roommember_user_room_idx"),
        ]


class ReadMarker(models.Model):
    """How far a user has read a room: the newest message id they have seen. Any room, public or private."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    last_read_message_id = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # rooms_for_user / unread counts: a user's marker in each room
            models.UniqueConstraint(fields=["user", "room"], name="readmarker_user_room_uniq"),
        ]
        indexes = [
            # deleting a room deletes its markers
            models.Index(fields=["room"], name="readmarker_room_idx"),
        ]


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages", db_index=False)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages", db_index=False)
    seq = models.BigIntegerField()
    body = models.TextField(max_length=10_000)
    created_at = models.DateTimeField(default=timezone.now)
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    client_id = models.CharField(max_length=64, null=True, blank=True)
    # A reply names the first message of its thread (never another reply). Replies
    # take the room's seq like any message, so resume and gap fill stay exact, but
    # they are not in the room's main timeline nor in its unread count.
    thread_root = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="+", db_index=False
    )

    class Meta:
        constraints = [
            # gap fill in the consumer: messages of a room with seq in (a, b)
            models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq_uniq"),
            # idempotent send: lookup by (author, client_id); also the author
            # index that deleting a user needs (NULL client_ids stay distinct)
            models.UniqueConstraint(fields=["author", "client_id"], name="message_author_client_id_uniq"),
        ]
        indexes = [
            # room_history / messages_after / unread counts: a room's messages by id;
            # author and deleted_at included so unread counts are index-only
            models.Index(fields=["room", "id"], name="message_room_id_idx", include=["author", "deleted_at"]),
            # the main timeline (history pages, unread tails and counts) without
            # the replies, however many there are: index-only as above
            models.Index(
                fields=["room", "id"],
                name="message_room_main_idx",
                include=["author", "deleted_at"],
                condition=Q(thread_root__isnull=True),
            ),
            # a thread's replies in order, their count and participants
            models.Index(
                fields=["thread_root", "id"],
                name="message_thread_id_idx",
                include=["author", "deleted_at", "created_at"],
                condition=Q(thread_root__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.id} in {self.room_id}"


class ThreadFollow(models.Model):
    """Someone following a thread, and how far they have read it (its own unread state).

    Made when they start the thread, reply in it or follow it by hand.
    Unfollowing keeps the row (``following`` False) with its read state;
    replying again follows again.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    root = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+", db_index=False)
    following = models.BooleanField(default=True)
    last_read_id = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # one row per person and thread; a user's followed threads by root
            models.UniqueConstraint(fields=["user", "root"], name="threadfollow_user_root_uniq"),
        ]
        indexes = [
            # a thread's followers (deleting a message deletes its follows)
            models.Index(fields=["root"], name="threadfollow_root_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} follows {self.root_id}"


class Reaction(models.Model):
    """One person's emoji on a message. Summaries are read per page of messages, never kept on the message row."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    emoji = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # idempotent add and remove; a page's summaries read by message
            models.UniqueConstraint(fields=["message", "emoji", "user"], name="reaction_message_emoji_user_uniq"),
        ]
        indexes = [
            # deleting a user deletes their reactions
            models.Index(fields=["user"], name="reaction_user_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.emoji} by {self.user_id} on {self.message_id}"


class Pin(models.Model):
    """A message pinned in its room, for everyone who reads the room."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="pins", db_index=False)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+", db_index=False)
    pinned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # a message is pinned once; deleting a message deletes its pin
            models.UniqueConstraint(fields=["message"], name="pin_message_uniq"),
        ]
        indexes = [
            # a room's pins, newest first
            models.Index(fields=["room", "id"], name="pin_room_id_idx"),
            # a user's deletion sets pinned_by to NULL
            models.Index(fields=["pinned_by"], name="pin_pinned_by_idx"),
        ]

    def __str__(self) -> str:
        return f"pin of {self.message_id} in {self.room_id}"



class RoomChange(models.Model):
    """A change of a room other than a new message, at its place in the room's event sequence.

    It takes the room's next ``seq`` (Room.last_message_seq) in the change's
    own transaction, under the room's row lock, so a room's messages and
    changes commit in ``seq`` order. Resume and gap fill read it back and send
    the message's state as it is then (chat.selectors.room_events).
    """

    class Kind(models.TextChoices):
        EDIT = "edit", "Edit"
        DELETE = "delete", "Delete"
        REACTION = "reaction", "Reactions"
        PIN = "pin", "Pin"
        UNPIN = "unpin", "Unpin"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+", db_index=False)
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+", db_index=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # resume and gap fill: a room's changes with seq in (a, b)
            models.UniqueConstraint(fields=["room", "seq"], name="roomchange_room_seq_uniq"),
        ]
        indexes = [
            # deleting a message deletes its changes
            models.Index(fields=["message"], name="roomchange_message_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.message_id} at {self.room_id}/{self.seq}"


def upload_path(upload: "Upload", filename: str) -> str:
    """Where a file is stored: a random folder per upload, so a name never collides and a path says nothing."""
    return f"uploads/{upload.room_id}/{secrets.token_urlsafe(12)}/{filename}"


class Upload(models.Model):
    """A file shared in a room. Readers of the room may download it (chat.views.file_download).

    A message shows it by linking to its URL (``/files/<id>/<name>``): the
    message writer's commit claims the uploads its body links to
    (``message``), which makes them part of the room's file list. Images get
    a thumbnail from the background worker.
    """

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+", db_index=False)
    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    message = models.ForeignKey(Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    file = models.FileField(upload_to=upload_path, max_length=300)
    thumbnail = models.FileField(upload_to="thumbs/", max_length=300, blank=True, default="")
    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    size = models.BigIntegerField()
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # a room's file list, newest first (deleting a room deletes its uploads)
            models.Index(fields=["room", "id"], name="upload_room_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} in {self.room_id}"


class NotificationSettings(models.Model):
    """How a user wants to hear of mentions and direct messages (defaults when they have no row)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+")
    # An e-mail of unread mentions and DMs, NOTIFY_DIGEST_DELAY after them (chat.notices).
    digest = models.BooleanField(default=True)
    # Do not disturb: no desktop notifications and no digest until then.
    quiet_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"notifications of {self.user_id}"


class RoomMute(models.Model):
    """A room or DM a user muted: no notifications and no digest lines for it (its unread count stays)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # idempotent mute; a user's muted rooms
            models.UniqueConstraint(fields=["user", "room"], name="roommute_user_room_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.room_id} muted by {self.user_id}"


class Notice(models.Model):
    """A mention or DM a user was notified of, kept until the digest has dealt with it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    # When the digest dealt with it: e-mailed, or found read, muted or unwanted.
    handled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # once per user and message, whichever worker records it
            models.UniqueConstraint(fields=["user", "message"], name="notice_user_message_uniq"),
        ]
        indexes = [
            # the digest's scan: notices not dealt with yet, oldest first
            models.Index(fields=["created_at"], name="notice_pending_idx", condition=Q(handled_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"notice of {self.message_id} for {self.user_id}"

class SavedMessage(models.Model):
    """A message a user saved for later: private to them."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # idempotent save and unsave
            models.UniqueConstraint(fields=["user", "message"], name="saved_user_message_uniq"),
        ]
        indexes = [
            # a user's saved list, newest first, paged by id
            models.Index(fields=["user", "id"], name="saved_user_id_idx"),
            # deleting a message deletes its saves
            models.Index(fields=["message"], name="saved_message_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} saved by {self.user_id}"


class ApiToken(models.Model):
    """A bearer token for programs. Only the SHA-256 of the key is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens", db_index=False)
    name = models.CharField(max_length=100, default="api")
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # token authentication lookup (a plain unique index: no LIKE twin)
            models.UniqueConstraint(fields=["key_hash"], name="apitoken_key_hash_uniq"),
        ]
        indexes = [
            # tokens of a user (admin, revocation on user delete)
            models.Index(fields=["user"], name="apitoken_user_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.user_id})"

    @staticmethod
    def hash_key(raw_key: str) -> str:
        """The stored form of a raw key (what ``key_hash`` holds)."""
        return hashlib.sha256(raw_key.encode()).hexdigest()
