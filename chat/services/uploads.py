"""Writes of shared files: upload, claim by a message, thumbnail.

An upload is stored through Django's storage API (the file system by
default) and answered with its URL; a message shows it by linking to that
URL (the browser client writes the link for you). After a message commits,
:func:`uploads_claim` ties the uploads its body links to (and that its
author uploaded to its room) to it: they are then in the room's file list.
Images are checked with Pillow on upload and get a thumbnail from the
background worker (:func:`upload_thumbnail`), never in the request.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from functools import partial
from io import BytesIO
from pathlib import PurePath
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from PIL import Image, ImageOps, UnidentifiedImageError

from chat import events
from chat.models import Message, Upload
from chatsite import ratelimit
from chatsite.errors import ChatError, Forbidden, InvalidInput

logger = logging.getLogger(__name__)

# What may be shared, by extension: its content type. Images are checked to be
# what they say; everything else is only ever downloaded as an attachment.
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
PILLOW_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
FILE_TYPES = {
    **IMAGE_TYPES,
    "pdf": "application/pdf",
    "txt": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "log": "text/plain",
    "json": "application/json",
    "zip": "application/zip",
    "gz": "application/gzip",
    "tar": "application/x-tar",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
}
NAME_MAX = 120
THUMBNAIL_SIZE = (480, 480)
# Images above this many pixels are refused (a small file can decode to gigabytes).
IMAGE_PIXELS_MAX = 40_000_000

# The URL of an upload as a message links to it (chat.urls "file-download").
FILE_LINK = re.compile(r"/files/(\d+)/")


class FileTooLarge(ChatError):
    status = 413
    code = "file_too_large"


class UnsupportedType(ChatError):
    status = 415
    code = "unsupported_type"


def clean_name(name: Any) -> str:
    """The file's own name, safe for a path and a header: no folders, controls or leading dots; at most NAME_MAX."""
    base = PurePath(str(name or "").replace("\\", "/")).name
    base = "".join(ch for ch in unicodedata.normalize("NFC", base) if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
    base = re.sub(r"\s+", " ", base).strip(" .")
    base = re.sub(r'[/?#%"<>]', "_", base)
    if not base:
        raise InvalidInput("The file needs a name.", code="invalid_name")
    stem, dot, ext = base.rpartition(".")
    if len(base) > NAME_MAX:
        base = f"{stem[: NAME_MAX - len(ext) - 1]}.{ext}" if dot and len(ext) < 12 else base[:NAME_MAX]
    return base


def file_too_large() -> FileTooLarge:
    return FileTooLarge(f"Files can be at most {settings.CHAT_UPLOAD_MAX_BYTES // (1024 * 1024)} MB.")


def upload_create(*, room: Any, user: Any, file: Any) -> Upload:
    """Store ``file`` (a Django UploadedFile) for ``room``; the Upload. Thumbnails follow from the worker.

    The caller has checked that ``user`` reads ``room`` (room_get_for_user).
    Refuses an archived project (403 ``archived``), a file past
    ``CHAT_UPLOAD_MAX_BYTES`` (413 ``file_too_large``), a type not in
    FILE_TYPES or an image that is not one (415 ``unsupported_type``), and
    more than ``RATE_LIMIT_UPLOADS`` per user (429).
    """
    if room.project.archived:
        raise Forbidden("This project is archived; it is read-only.", code="archived")
    ratelimit.hit("upload", user.pk)
    if file.size > settings.CHAT_UPLOAD_MAX_BYTES:
        raise file_too_large()
    if file.size == 0:
        raise InvalidInput("The file is empty.", code="empty_file")
    name = clean_name(file.name)
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    content_type = FILE_TYPES.get(ext)
    if content_type is None:
        allowed = ", ".join(sorted(FILE_TYPES))
        raise UnsupportedType(f"Files of this type cannot be shared here. Allowed: {allowed}.")
    width = height = None
    if ext in IMAGE_TYPES:
        content_type, width, height = _checked_image(file)
    upload = Upload(room=room, uploader=user, name=name, content_type=content_type, size=file.size, width=width, height=height)
    with transaction.atomic():
        upload.file.save(name, file, save=False)
        upload.save()
        if width is not None:
            transaction.on_commit(
                partial(events.enqueue_background, {"type": "upload.created", "upload_id": upload.id}), robust=True
            )
    return upload


def _checked_image(file: Any) -> tuple[str, int, int]:
    """An image's real type and size, from its content; UnsupportedType when it is not an image Pillow reads."""
    try:
        file.seek(0)
        with Image.open(file) as image:
            image.verify()
            kind, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise UnsupportedType("This file is not an image that can be shown.") from None
    finally:
        file.seek(0)
    if kind not in PILLOW_FORMATS:
        raise UnsupportedType("This file is not an image that can be shown.")
    if width * height > IMAGE_PIXELS_MAX:
        raise UnsupportedType("This image has too many pixels to be shown.")
    return PILLOW_FORMATS[kind], width, height


def uploads_claim(*, messages: list[Message]) -> None:
    """Tie the uploads each message links to (its author's, in its room, not tied yet) to it. Call after commit."""
    for message in messages:
        ids = {int(found) for found in FILE_LINK.findall(message.body)}
        if ids:
            Upload.objects.filter(
                id__in=ids, room_id=message.room_id, uploader_id=message.author_id, message__isnull=True
            ).update(message=message)


def upload_thumbnail(*, upload_id: int) -> bool:
    """Make an image upload's thumbnail (the background worker); True when one was made."""
    upload = Upload.objects.filter(pk=upload_id).first()
    if upload is None or upload.width is None or upload.thumbnail:
        return False
    try:
        with upload.file.open("rb") as source, Image.open(source) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail(THUMBNAIL_SIZE)
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "transparency" in image.info or image.mode in ("LA", "P") else "RGB")
            out = BytesIO()
            image.save(out, format="WEBP", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        logger.warning("no thumbnail for upload %s", upload_id, exc_info=True)
        return False
    upload.thumbnail.save(f"{upload.id}.webp", ContentFile(out.getvalue()), save=False)
    Upload.objects.filter(pk=upload.id).update(thumbnail=upload.thumbnail.name)
    return True
