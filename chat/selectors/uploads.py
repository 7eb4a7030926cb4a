"""Reads of shared files: one for download (after the room's access check), a room's file list."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from chat.models import Upload
from chat.selectors.rooms import room_get_for_user
from chatsite.errors import NotFound
from chatsite.users import user_dict


def upload_get_for_user(*, user: Any, upload_id: int) -> Upload:
    """An upload of a room ``user`` may read; NotFound otherwise (as a missing one)."""
    upload = Upload.objects.filter(pk=upload_id).first()
    if upload is None:
        raise NotFound("File not found.")
    try:
        room_get_for_user(user=user, room_id=upload.room_id)
    except NotFound:
        raise NotFound("File not found.") from None
    return upload


def room_files(*, room: Any, before: int | None, limit: int) -> list[Upload]:
    """The files of a room's live messages, newest first (one query on upload_room_id_idx).

    The caller has checked that the user reads ``room``.
    """
    files = Upload.objects.filter(room=room, message__isnull=False, message__deleted_at__isnull=True)
    if before is not None:
        files = files.filter(id__lt=before)
    return list(files.select_related("uploader").order_by("-id")[:limit])


def upload_dict(upload: Upload, *, with_uploader: bool = False) -> dict[str, Any]:
    """An upload on the wire. ``url`` is where readers of its room download it; ``markdown`` links it in a
    message. ``with_uploader``: the upload was read with its uploader (room_files)."""
    url = reverse("file-download", args=[upload.id, upload.name])
    return {
        "id": upload.id,
        "room": upload.room_id,
        "name": upload.name,
        "content_type": upload.content_type,
        "size": upload.size,
        "width": upload.width,
        "height": upload.height,
        "url": url,
        "thumbnail_url": reverse("file-thumbnail", args=[upload.id]) if upload.thumbnail else None,
        "markdown": "[{}](<{}>)".format(upload.name.replace("[", "\\[").replace("]", "\\]"), url),
        "message": upload.message_id,
        "uploader": user_dict(upload.uploader) if with_uploader and upload.uploader_id is not None else None,
        "created_at": upload.created_at.isoformat(),
    }
