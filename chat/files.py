"""Serving a shared file once its reader's access is checked (pages and the API both answer with this).

Raster images show inline; every other type downloads as an attachment, so
no shared file is ever rendered by the browser as a page. A storage that
keeps files elsewhere (an S3-compatible bucket) is answered with a redirect
to its own short-lived signed URL; the file system's are streamed.
"""

from __future__ import annotations

from urllib.parse import quote

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
        # An S3-compatible bucket (django-storages): a signed URL that expires, which
        # makes the bucket answer with the type and disposition this response would have.
        disposition = f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{quote(upload.name)}"
        parameters = {"ResponseContentType": content_type, "ResponseContentDisposition": disposition}
        response: HttpResponse = HttpResponseRedirect(stored.storage.url(stored.name, parameters=parameters))
        patch_cache_control(response, private=True, no_store=True)  # the link expires
        return response
    response = FileResponse(stored.open("rb"), content_type=content_type, as_attachment=not inline, filename=upload.name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = FILE_CSP
    # An upload never changes under its id; only its room's readers may keep it.
    patch_cache_control(response, private=True, max_age=3600)
    return response
