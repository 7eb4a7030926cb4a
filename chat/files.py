"""Serving a shared file once its reader's access is checked (pages and the API both answer with this).

Raster images show inline; every other type downloads as an attachment, so
no shared file is ever rendered by the browser as a page. A storage that
keeps files elsewhere (an object store) is answered with a redirect to its
own short-lived URL (``storage.url``); the file system's are streamed.
"""

from __future__ import annotations

from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.utils.cache import patch_cache_control

from chat.models import Upload
from chat.services.uploads import IMAGE_TYPES

INLINE_TYPES = frozenset(IMAGE_TYPES.values())
# Whatever the file holds, it runs nothing and loads nothing.
FILE_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"


def file_response(upload: Upload, *, thumbnail: bool = False) -> HttpResponse:
    stored = upload.thumbnail if thumbnail else upload.file
    if not stored:
        raise Http404("No thumbnail yet.")
    content_type = "image/webp" if thumbnail else upload.content_type
    inline = content_type in INLINE_TYPES
    try:
        stored.path  # noqa: B018 - only a storage with local paths has one
    except NotImplementedError:
        response: HttpResponse = HttpResponseRedirect(stored.storage.url(stored.name))
    else:
        response = FileResponse(
            stored.open("rb"), content_type=content_type, as_attachment=not inline, filename=upload.name
        )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = FILE_CSP
    # An upload never changes under its id; only its room's readers may keep it.
    patch_cache_control(response, private=True, max_age=3600)
    return response
