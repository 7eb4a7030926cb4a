"""Response compression (ADR-008): brotli when the client accepts it, else gzip.

Built on django-http-compression's ``HttpCompressionMiddleware``, which knows
the compressible content types, carries the BREACH padding and the sync/async
plumbing. This subclass applies the project's rules, read from settings for
every response (so they can be switched without a restart of the middleware
chain, and overridden in tests):

- ``COMPRESSION_ENABLED`` (env ``ENABLE_COMPRESSION``) turns it all off;
- ``br`` at ``COMPRESSION_BROTLI_QUALITY`` when the client accepts it, else
  ``gzip`` at ``COMPRESSION_GZIP_LEVEL``; zstd is not offered;
- bodies shorter than ``COMPRESSION_MIN_LENGTH`` go out as they are: below
  about 1 KB the saving is smaller than the cost of compressing;
- streaming responses are compressed chunk by chunk, each chunk flushed, so a
  stream stays a stream;
- ``Vary: Accept-Encoding`` on every response that could have been
  compressed, whatever this client accepted, so a shared cache keeps the
  variants apart;
- a strong ETag becomes weak when the body is compressed, as Django's
  GZipMiddleware does (RFC 9110 section 8.8.1); If-None-Match still matches
  because Django compares ETags weakly;
- BREACH: like Django's GZipMiddleware, every compressed response carries 0 to
  99 random bytes (the "Heal the Breach" technique). They go in an
  ``X-Noise`` header rather than the gzip file name so brotli gets them too;
- ``Cache-Control: no-transform`` and responses that already have a
  Content-Encoding or a Content-Range are left alone.

Under ASGI compression runs on the event loop for ordinary bodies (a 50
message history page takes well under a millisecond) and in a worker thread
for bodies of ``offload_min_length`` and more, so one large response cannot
stall every other request on the loop. zlib and brotli release the GIL while
they work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from gzip import GzipFile
from secrets import randbelow, token_urlsafe
from typing import Any, Literal

import brotli
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.text import StreamingBuffer
from django_http_compression.middleware import HttpCompressionMiddleware

Coding = Literal["br", "gzip", "identity"]

# Longer Accept-Encoding headers are not parsed (no browser sends one).
ACCEPT_ENCODING_MAX_LENGTH = 2048


class CompressionMiddleware(HttpCompressionMiddleware):
    """Place it above every middleware that reads or changes the response body."""

    # Bodies this large are compressed in a worker thread under ASGI.
    offload_min_length = 64 * 1024

    def __call__(self, request: HttpRequest) -> Any:
        # The parent dispatches to its own name-mangled __acall__; route to ours.
        if self.async_mode:
            return self._acall(request)
        response = self.get_response(request)
        self.maybe_compress(request, response)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        if not response.streaming and len(response.content) >= self.offload_min_length:
            await sync_to_async(self.maybe_compress, thread_sensitive=False)(request, response)
        else:
            self.maybe_compress(request, response)
        return response

    def maybe_compress(self, request: HttpRequest, response: HttpResponseBase) -> None:
        if not settings.COMPRESSION_ENABLED:
            return
        if getattr(response, "precompressed", False):
            # Encoded once when it was cached (encoded_response); only the
            # per-response parts are left.
            self._mark_encoded(response)
            return
        headers = response.headers
        content_type = headers.get("Content-Type", "").split(";", 1)[0]
        if not self.content_type_re.match(content_type):
            return
        if "Content-Encoding" in headers or "Content-Range" in headers:
            return
        if "no-transform" in headers.get("Cache-Control", ""):
            return
        if not response.streaming and len(response.content) < settings.COMPRESSION_MIN_LENGTH:
            return

        patch_vary_headers(response, ("Accept-Encoding",))
        coding = preferred_coding(request.headers.get("Accept-Encoding", ""))
        if coding == "identity":
            return

        gzip_level = settings.COMPRESSION_GZIP_LEVEL
        brotli_quality = settings.COMPRESSION_BROTLI_QUALITY
        if response.streaming:
            if response.is_async:
                if coding == "br":
                    response.streaming_content = brotli_stream_async(response.streaming_content, brotli_quality)
                else:
                    response.streaming_content = gzip_stream_async(response.streaming_content, gzip_level)
            elif coding == "br":
                response.streaming_content = brotli_stream(response.streaming_content, brotli_quality)
            else:
                response.streaming_content = gzip_stream(response.streaming_content, gzip_level)
            # The compressed length is unknown until the stream ends.
            del headers["Content-Length"]
        else:
            body = response.content
            if coding == "br":
                compressed = brotli.compress(body, quality=brotli_quality)
            else:
                compressed = gzip_compress(body, gzip_level)
            if len(compressed) >= len(body):
                return
            response.content = compressed
            headers["Content-Length"] = str(len(compressed))

        headers["Content-Encoding"] = coding
        self._mark_encoded(response)

    def _mark_encoded(self, response: HttpResponseBase) -> None:
        """BREACH padding and a weak ETag on a response whose body is now encoded."""
        headers = response.headers
        if self.max_random_bytes:
            headers["X-Noise"] = token_urlsafe(randbelow(self.max_random_bytes + 1))
        etag = headers.get("ETag")
        if etag and etag.startswith('"'):
            headers["ETag"] = "W/" + etag


# A body encoded once for many responses: (coding, brotli quality, length of
# the plain body, the bytes). See precompress and encoded_response.
Encoded = tuple[str, int, int, bytes]


def precompress(body: bytes) -> Encoded:
    """``body`` ready to be cached and served many times (encoded_response).

    Brotli-compressed at ``COMPRESSION_BROTLI_QUALITY`` when the middleware
    would compress it for a client that accepts brotli, else as it is: a
    cached history page is compressed once, not once per reader, and takes
    a fifth of the memory.
    """
    if settings.COMPRESSION_ENABLED and len(body) >= settings.COMPRESSION_MIN_LENGTH:
        quality = settings.COMPRESSION_BROTLI_QUALITY
        data = brotli.compress(body, quality=quality)
        if len(data) < len(body):
            return ("br", quality, len(body), data)
    return ("identity", 0, len(body), body)


def sent_as_stored(encoded: Encoded) -> Coding | None:
    """How a body from :func:`precompress` can go out unchanged, if it can.

    ``"br"``: its brotli bytes are what CompressionMiddleware would make for
    a client that prefers brotli (the same quality, the plain body above the
    floor). ``"identity"``: a body under the floor, which the middleware
    leaves as it is for every client. None: it must be decoded first.
    """
    coding, quality, length, _data = encoded
    if coding == "br":
        if (
            settings.COMPRESSION_ENABLED
            and quality == settings.COMPRESSION_BROTLI_QUALITY
            and length >= settings.COMPRESSION_MIN_LENGTH
        ):
            return "br"
        return None
    return "identity" if length < settings.COMPRESSION_MIN_LENGTH else None


def stored_brotli_response(data: bytes, *, content_type: str) -> HttpResponse:
    """A response carrying already brotli-compressed bytes; CompressionMiddleware adds only the padding."""
    response = HttpResponse(data, content_type=content_type)
    response.headers["Content-Encoding"] = "br"
    patch_vary_headers(response, ("Accept-Encoding",))
    response.precompressed = True  # type: ignore[attr-defined]
    return response


def encoded_response(request: HttpRequest, encoded: Encoded, *, content_type: str) -> HttpResponse:
    """The response for a body from :func:`precompress`.

    Its stored brotli bytes go out as they are when this request would get
    exactly those from CompressionMiddleware (:func:`sent_as_stored`, and a
    client that prefers brotli). Any other request gets the plain body,
    which the middleware treats like every other response.
    """
    coding, _quality, _length, data = encoded
    if coding == "br":
        if sent_as_stored(encoded) == "br" and preferred_coding(request.headers.get("Accept-Encoding", "")) == "br":
            return stored_brotli_response(data, content_type=content_type)
        data = brotli.decompress(data)
    return HttpResponse(data, content_type=content_type)


def preferred_coding(accept_encoding: str) -> Coding:
    """``br`` if the client accepts it, else ``gzip`` if it does, else ``identity``.

    q-values are honoured: a coding with ``q=0`` is refused, and a higher q
    wins over our preference for brotli. ``*`` stands for any coding not named.
    """
    if len(accept_encoding) > ACCEPT_ENCODING_MAX_LENGTH:
        return "identity"
    return _preferred_coding(accept_encoding)


@lru_cache(maxsize=256)
def _preferred_coding(accept_encoding: str) -> Coding:
    named: dict[str, float] = {}
    wildcard: float | None = None
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        coding = coding.strip()
        if not coding:
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        if not 0 <= q <= 1:
            continue
        if coding == "*":
            wildcard = q
        else:
            named[coding] = q
    candidates: list[tuple[float, int, Coding]] = []
    for preference, coding in enumerate(("br", "gzip")):
        q = named.get(coding, wildcard)
        if q:
            candidates.append((q, -preference, coding))
    return max(candidates)[2] if candidates else "identity"


def gzip_compress(data: bytes, level: int) -> bytes:
    buf = StreamingBuffer()
    with GzipFile(mode="wb", compresslevel=level, fileobj=buf, mtime=0) as zfile:
        zfile.write(data)
    return buf.read()


def gzip_stream(chunks: Iterator[bytes], level: int) -> Iterator[bytes]:
    """Gzip a stream, flushing after every chunk so nothing waits for the next one."""
    buf = StreamingBuffer()
    with GzipFile(mode="wb", compresslevel=level, fileobj=buf, mtime=0) as zfile:
        yield b""  # send the headers now
        for chunk in chunks:
            zfile.write(chunk)
            zfile.flush()
            data = buf.read()
            if data:
                yield data
    yield buf.read()


async def gzip_stream_async(chunks: AsyncIterator[bytes], level: int) -> AsyncIterator[bytes]:
    buf = StreamingBuffer()
    with GzipFile(mode="wb", compresslevel=level, fileobj=buf, mtime=0) as zfile:
        yield b""
        async for chunk in chunks:
            zfile.write(chunk)
            zfile.flush()
            data = buf.read()
            if data:
                yield data
    yield buf.read()


def brotli_stream(chunks: Iterator[bytes], quality: int) -> Iterator[bytes]:
    compressor = brotli.Compressor(quality=quality)
    yield b""
    for chunk in chunks:
        data = compressor.process(chunk) + compressor.flush()
        if data:
            yield data
    yield compressor.finish()


async def brotli_stream_async(chunks: AsyncIterator[bytes], quality: int) -> AsyncIterator[bytes]:
    compressor = brotli.Compressor(quality=quality)
    yield b""
    async for chunk in chunks:
        data = compressor.process(chunk) + compressor.flush()
        if data:
            yield data
    yield compressor.finish()
