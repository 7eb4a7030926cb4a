"""The upload size limit, applied while a multipart body is read: a file past it costs no disk or memory.

Django has no per-file size limit of its own. This handler, first in
``FILE_UPLOAD_HANDLERS``, stops reading the body as soon as a file passes
``CHAT_UPLOAD_MAX_BYTES`` (or the body says it is larger than that can be) and
marks the request, so the upload endpoints answer 413 ``file_too_large``
instead of a missing file.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

# Room in a multipart body for its boundaries, headers and small fields.
BODY_SLACK = 64 * 1024


def too_large(request: Any) -> bool:
    """Whether this request's upload was stopped for its size."""
    return bool(getattr(request, "upload_too_large", False))


class SizeLimitHandler(FileUploadHandler):
    def handle_raw_input(self, input_data: Any, META: Any, content_length: int, boundary: Any, encoding: Any = None) -> None:
        if content_length > settings.CHAT_UPLOAD_MAX_BYTES + BODY_SLACK:
            self._refuse()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > settings.CHAT_UPLOAD_MAX_BYTES:
            self._refuse()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler makes the file

    def _refuse(self) -> None:
        if self.request is not None:
            self.request.upload_too_large = True
        raise StopUpload(connection_reset=False)  # the rest is read and dropped, so the client gets its 413
