"""JSON API endpoints for shared files. Mounted by chatsite.api.

Thin, as chat.api: a room or file the caller may not read is 404; the checks
on what may be shared are chat.services.uploads'.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Field, File, Query, Router, Schema, Status
from ninja.files import UploadedFile

from chat import files
from chat.selectors import rooms as room_selectors
from chat.selectors import uploads as upload_selectors
from chat.services import uploads as upload_services
from chat.upload_limit import too_large
from chatsite.api_schemas import (
    ERROR_RESPONSES,
    ErrorOut,
    PageQuery,
    UserOut,
    page_cursor_encode,
    page_cursor_key,
    page_limit,
)
from chatsite.errors import InvalidInput

router = Router()


class UploadOut(Schema):
    """A shared file."""

    id: int
    room: int
    name: str
    content_type: str
    size: int = Field(..., description="Bytes.")
    width: int | None = Field(..., description="Images: pixels across; null for other files.")
    height: int | None
    url: str = Field(..., description="Download (readers of the room only): the session's or a bearer token's access.")
    thumbnail_url: str | None = Field(..., description="Images: a small WebP, once the background worker made it.")
    markdown: str = Field(..., description="A link to the file to put in a message body.")
    message: int | None = Field(..., description="The message that shares it, once one links to it.")
    uploader: UserOut | None = Field(..., description="In file lists; null in the upload's own answer.")
    created_at: str


class FilePage(Schema):
    items: list[UploadOut]
    next_cursor: str | None


@router.post(
    "/rooms/{room_id}/uploads",
    response={201: UploadOut, 415: ErrorOut, **ERROR_RESPONSES},
    tags=["files"],
)
def upload_create(request: HttpRequest, room_id: int, file: File[UploadedFile] = None) -> Status:  # type: ignore[assignment]
    """Share a file in a room (multipart form, field `file`). Then send a message that links to it (`markdown`).

    413 `file_too_large` past `UPLOAD_MAX_BYTES` (10 MB by default), 415
    `unsupported_type` for a type that cannot be shared or an image that is
    not one, 429 past `RATE_LIMIT_UPLOADS`. Images get a thumbnail shortly after.
    """
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    if too_large(request):
        raise upload_services.file_too_large()
    if file is None:
        raise InvalidInput("Send the file as the multipart field 'file'.", code="missing_file")
    upload = upload_services.upload_create(room=room, user=request.auth, file=file)
    return Status(201, upload_selectors.upload_dict(upload))


@router.get("/rooms/{room_id}/files", response={200: FilePage, **ERROR_RESPONSES}, tags=["files"])
def file_list(request: HttpRequest, room_id: int, page: Query[PageQuery]) -> dict[str, Any]:
    """The files shared by the room's live messages, newest first; `next_cursor` fetches older ones."""
    room = room_selectors.room_get_for_user(user=request.auth, room_id=room_id)
    limit = page_limit(page.limit)
    before = page_cursor_key(page.cursor, key="b", kind=int)
    found = upload_selectors.room_files(room=room, before=before, limit=limit + 1)
    items = found[:limit]
    next_cursor = page_cursor_encode({"b": items[-1].id}) if len(found) > limit else None
    return {"items": [upload_selectors.upload_dict(u, with_uploader=True) for u in items], "next_cursor": next_cursor}


@router.get("/files/{upload_id}", response={200: None, **ERROR_RESPONSES}, tags=["files"])
def file_download(request: HttpRequest, upload_id: int) -> HttpResponse:
    """The file itself, for readers of its room (for programs with a bearer token; pages use its `url`)."""
    upload = upload_selectors.upload_get_for_user(user=request.auth, upload_id=upload_id)
    return files.file_response(upload)
