"""Response compression (ADR-008): brotli when the client accepts it, else gzip.

A middleware of the project's own (django-http-compression's fixed qualities,
preference for zstd and 50-byte floor do not fit ADR-008's rules). Its rules,
read from settings for every response (so they can be switched without a
restart of the middleware chain, and overridden in tests):

- ``COMPRESSION_ENABLED`` (env ``ENABLE_COMPRESSION``) turns it all off;
- ``br`` at ``COMPRESSION_BROTLI_QUALITY`` when the client accepts it, else
  ``gzip`` at ``COMPRESSION_GZIP_LEVEL``; zstd is not offered;
- bodies shorter than ``COMPRESSION_MIN_LENGTH`` go out as they are: below
  about 1 KB the saving is smaller than the cost of compressing;
- only text-like content types (:data:`COMPRESSIBLE`);
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

It runs in the request's worker thread, like the rest of Django's chain
(chatsite.asgi); zlib and brotli release the GIL while they work.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from gzip import GzipFile
from secrets import randbelow, token_urlsafe
from typing import Callable, Literal

import brotli
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.text import StreamingBuffer

Coding = Literal["br", "gzip", "identity"]

# Longer Accept-Encoding headers are not parsed (no browser sends one).
ACCEPT_ENCODING_MAX_LENGTH = 2048
# BREACH padding: up to this many random bytes in X-Noise.
MAX_RANDOM_BYTES = 99
# Text-like types worth compressing (images, fonts in woff and archives are compressed already).
COMPRESSIBLE = re.compile(
    r"^(?:text/.*|application/(?:json|javascript|x-javascript|xml|xhtml\+xml|rss\+xml|atom\+xml|ld\+json"
    r"|manifest\+json|vnd\.api\+json|geo\+json|wasm)|image/svg\+xml|image/x-icon|image/vnd\.microsoft\.icon)$",
    re.IGNORECASE,
)


class CompressionMiddleware:
    """Place it above every middleware that reads or changes the response body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        maybe_compress(request, response)
        return response


def maybe_compress(request: HttpRequest, response: HttpResponseBase) -> None:
    if not settings.COMPRESSION_ENABLED:
        return
    if getattr(response, "precompressed", False):
        # Encoded once when it was cached (encoded_response); only the
        # per-response parts are left.
        _mark_encoded(response)
        return
    headers = response.headers
    content_type = headers.get("Content-Type", "").split(";", 1)[0]
    if not COMPRESSIBLE.match(content_type):
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
        if coding == "br":
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
    _mark_encoded(response)


def _mark_encoded(response: HttpResponseBase) -> None:
    """BREACH padding and a weak ETag on a response whose body is now encoded."""
    headers = response.headers
    headers["X-Noise"] = token_urlsafe(randbelow(MAX_RANDOM_BYTES + 1))
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


def encoded_response(request: HttpRequest, encoded: Encoded, *, content_type: str) -> HttpResponse:
    """The response for a body from :func:`precompress`.

    Its stored brotli bytes go out as they are when they are exactly what
    CompressionMiddleware would make for this request (compression on, the
    same quality, a body above the floor, a client that prefers brotli); the
    middleware then adds only the per-response parts. Any other request gets
    the plain body, which the middleware treats like every other response.
    """
    coding, quality, length, data = encoded
    if coding != "br":
        return HttpResponse(data, content_type=content_type)
    as_stored = (
        settings.COMPRESSION_ENABLED
        and quality == settings.COMPRESSION_BROTLI_QUALITY
        and length >= settings.COMPRESSION_MIN_LENGTH
        and preferred_coding(request.headers.get("Accept-Encoding", "")) == "br"
    )
    if not as_stored:
        return HttpResponse(brotli.decompress(data), content_type=content_type)
    response = HttpResponse(data, content_type=content_type)
    response.headers["Content-Encoding"] = "br"
    patch_vary_headers(response, ("Accept-Encoding",))
    response.precompressed = True  # type: ignore[attr-defined]
    return response


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


def brotli_stream(chunks: Iterator[bytes], quality: int) -> Iterator[bytes]:
    compressor = brotli.Compressor(quality=quality)
    yield b""
    for chunk in chunks:
        data = compressor.process(chunk) + compressor.flush()
        if data:
            yield data
    yield compressor.finish()
