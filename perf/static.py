"""Static files in production: whitenoise, fitted to the ASGI server.

``manage.py collectstatic`` with whitenoise's CompressedManifestStaticFilesStorage
writes every file under a name carrying a hash of its content
(``chat/chat.3f2a9c.js``) and beside it a ``.br`` and a ``.gz`` made once, at
the highest settings, so no request pays for compressing an asset.
``StaticFilesMiddleware`` serves them: the smallest variant the client
accepts, ``Cache-Control: max-age=31536000, public, immutable`` for hashed
names (a new content is a new name) and ``WHITENOISE_MAX_AGE`` seconds for
the plain names, which anyone may still request.

whitenoise is a WSGI-era middleware. Left as it is, Django would run every
request through it in a worker thread, static or not. This subclass is
async-capable: under ASGI a request for anything else costs one dictionary
lookup on the event loop, and a static file is read in a worker thread and
sent as one body (our assets are tens of KB; a synchronous file iterator
would be drained the same way by Django, with a warning each time).

In DEBUG the ASGI application serves /static/ itself from the source folders
(chatsite.asgi), so this middleware is only in the production settings.

``release_fingerprint()`` names the templates and static files a process
serves; page ETags include it (chat.views).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings as django_settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware
from whitenoise.responders import StaticFile

# One year, the customary lifetime of content-hashed assets (whitenoise's own default is ten).
IMMUTABLE_MAX_AGE = 365 * 24 * 60 * 60


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    FOREVER = IMMUTABLE_MAX_AGE
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, settings: Any = django_settings) -> None:
        super().__init__(get_response, settings)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> Any:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is None:
            return await self.get_response(request)
        return await sync_to_async(self.serve_buffered, thread_sensitive=False)(static_file, request)

    @staticmethod
    def serve_buffered(static_file: StaticFile, request: HttpRequest) -> HttpResponse:
        """whitenoise's response with the file read into memory (for the async path)."""
        response = static_file.get_response(request.method, request.META)
        body = b""
        if response.file is not None:
            try:
                body = response.file.read()
            finally:
                response.file.close()
        http_response = HttpResponse(body, status=int(response.status))
        del http_response["Content-Type"]
        for key, value in response.headers:
            http_response[key] = value
        return http_response


@lru_cache(maxsize=1)
def release_fingerprint() -> str:
    """A digest of what pages are built from besides their data, computed once per process.

    The project's templates and, with a manifest storage, the hashed names of
    the static files. Page ETags include it, so after a deploy that changes
    either a browser never keeps an old page (or one pointing at assets that
    are gone) on a 304.
    """
    digest = hashlib.blake2b(digest_size=8)
    templates = Path(django_settings.BASE_DIR, "templates")
    for path in sorted(templates.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(templates)).encode())
            digest.update(path.read_bytes())
    hashed_files = getattr(staticfiles_storage, "hashed_files", None) or {}
    digest.update(repr(sorted(hashed_files.items())).encode())
    return digest.hexdigest()
