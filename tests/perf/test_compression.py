"""Response compression (perf.compression) on the real API and pages, PostgreSQL and Redis behind them."""

from __future__ import annotations

import gzip
import random
import zlib

import brotli
import orjson
import pytest
from django.http import HttpResponse, StreamingHttpResponse
from django.test import RequestFactory, override_settings

from perf.compression import CompressionMiddleware, preferred_coding

API = "/api/v1"
BROWSER = "gzip, deflate, br, zstd"


def decode(response) -> bytes:
    body = response.content
    coding = response.headers.get("Content-Encoding")
    if coding == "br":
        return brotli.decompress(body)
    if coding == "gzip":
        return gzip.decompress(body)
    assert coding is None, coding
    return body


@pytest.fixture
def seed_messages(make_message):
    def seed(room, authors, count):
        return [make_message(room, authors[i % len(authors)], body=f"seeded {i}") for i in range(count)]

    return seed


@pytest.fixture
def history(chat_world, api_client, seed_messages):
    """A member's API client and a room whose newest page is well above 1 KB."""
    seed_messages(chat_world["public"], [chat_world["owner"], chat_world["member"]], 30)
    return api_client(chat_world["member"]), f"{API}/rooms/{chat_world['public'].id}/messages"


@pytest.mark.parametrize(
    "accept,coding",
    [(BROWSER, "br"), ("br", "br"), ("gzip, deflate", "gzip"), ("gzip", "gzip"), ("", None), ("identity", None)],
)
def test_history_is_compressed_with_the_best_accepted_coding(history, accept, coding):
    client, url = history
    plain = client.get(url)
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    assert len(plain.content) >= 1024

    response = client.get(url, headers={"Accept-Encoding": accept})
    assert response.status_code == 200
    assert response.headers.get("Content-Encoding") == coding
    assert decode(response) == plain.content
    assert orjson.loads(decode(response))["items"] == plain.json()["items"]
    assert int(response.headers["Content-Length"]) == len(response.content)
    # Caches must keep the variants apart even when this client got identity.
    assert "accept-encoding" in response.headers["Vary"].lower()
    if coding:
        assert len(response.content) < len(plain.content) / 2
        assert "X-Noise" in response.headers  # BREACH padding (Heal the Breach)
    else:
        assert "X-Noise" not in response.headers


def test_small_response_is_not_compressed(chat_world, api_client):
    response = api_client(chat_world["member"]).get(f"{API}/me", headers={"Accept-Encoding": BROWSER})
    assert response.status_code == 200 and len(response.content) < 1024
    assert "Content-Encoding" not in response.headers
    assert response.json()["username"] == "member"


def test_floor_is_the_setting(history):
    client, url = history
    size = len(client.get(url).content)
    with override_settings(COMPRESSION_MIN_LENGTH=size + 1):
        assert "Content-Encoding" not in client.get(url, headers={"Accept-Encoding": "br"}).headers
    with override_settings(COMPRESSION_MIN_LENGTH=size):
        assert client.get(url, headers={"Accept-Encoding": "br"}).headers["Content-Encoding"] == "br"


def test_levels_come_from_settings(history):
    client, url = history
    plain = client.get(url).content
    with override_settings(COMPRESSION_GZIP_LEVEL=1):
        fast = client.get(url, headers={"Accept-Encoding": "gzip"})
    with override_settings(COMPRESSION_GZIP_LEVEL=9):
        best = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert gzip.decompress(fast.content) == gzip.decompress(best.content) == plain
    # Byte 10 on is the deflate stream and the trailer (the header names the OS).
    assert fast.content[10:] == gzip.compress(plain, compresslevel=1, mtime=0)[10:]
    assert best.content[10:] == gzip.compress(plain, compresslevel=9, mtime=0)[10:]
    assert fast.content[10:] != best.content[10:]
    with override_settings(COMPRESSION_BROTLI_QUALITY=11):
        assert client.get(url, headers={"Accept-Encoding": "br"}).content == brotli.compress(plain, quality=11)


def test_default_levels_are_the_adr_ones(history):
    client, url = history
    plain = client.get(url).content
    gzipped = client.get(url, headers={"Accept-Encoding": "gzip"}).content
    assert gzipped[10:] == gzip.compress(plain, compresslevel=5, mtime=0)[10:]
    assert gzipped[10:] != gzip.compress(plain, compresslevel=6, mtime=0)[10:]
    assert client.get(url, headers={"Accept-Encoding": "br"}).content == brotli.compress(plain, quality=4)


def test_disabled_by_setting(history):
    client, url = history
    with override_settings(COMPRESSION_ENABLED=False):
        response = client.get(url, headers={"Accept-Encoding": BROWSER})
    assert "Content-Encoding" not in response.headers
    assert response.json()["items"]


def test_room_page_html_is_compressed(chat_world, client, seed_messages):
    seed_messages(chat_world["public"], [chat_world["owner"]], 5)
    client.force_login(chat_world["member"])
    url = "/p/world/r/general/"
    response = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert response.headers["Content-Encoding"] == "gzip"
    html = gzip.decompress(response.content).decode()
    assert "seeded 4" in html and "</html>" in html


@pytest.mark.parametrize(
    "accept,coding",
    [
        ("gzip, deflate, br, zstd", "br"),
        ("zstd", "identity"),
        ("br;q=0, gzip", "gzip"),
        ("gzip;q=1.0, br;q=0.5", "gzip"),
        ("gzip;q=0.5, br;q=0.5", "br"),
        ("*", "br"),
        ("*;q=0.5, br;q=0", "gzip"),
        ("gzip;q=0", "identity"),
        ("gzip;q=nonsense", "identity"),
        ("GZIP", "gzip"),
        ("x" * 3000 + ", br", "identity"),
    ],
)
def test_preferred_coding(accept, coding):
    assert preferred_coding(accept) == coding


# --- The middleware on responses no endpoint produces on demand -------------


def run(response: HttpResponse, accept: str = "br", **headers: str) -> HttpResponse:
    request = RequestFactory().get("/", headers={"Accept-Encoding": accept, **headers})
    return CompressionMiddleware(lambda request: response)(request)


def test_strong_etag_is_weakened_and_weak_one_kept():
    strong = HttpResponse(b"x" * 2000, content_type="application/json")
    strong["ETag"] = '"abc"'
    assert run(strong)["ETag"] == 'W/"abc"'
    weak = HttpResponse(b"x" * 2000, content_type="application/json")
    weak["ETag"] = 'W/"abc"'
    assert run(weak)["ETag"] == 'W/"abc"'
    untouched = HttpResponse(b"x" * 2000, content_type="application/json")
    untouched["ETag"] = '"abc"'
    assert run(untouched, accept="")["ETag"] == '"abc"'


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "video/mp4", "font/woff2"])
def test_incompressible_types_are_left_alone(content_type):
    response = run(HttpResponse(b"\x00" * 5000, content_type=content_type))
    assert "Content-Encoding" not in response.headers
    assert response.content == b"\x00" * 5000
    assert "Vary" not in response.headers


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=utf-8", "application/json", "text/css", "application/javascript", "image/svg+xml"]
)
def test_compressible_types(content_type):
    response = run(HttpResponse(b"a" * 5000, content_type=content_type))
    assert response["Content-Encoding"] == "br"
    assert brotli.decompress(response.content) == b"a" * 5000


def test_already_encoded_or_no_transform_is_left_alone():
    encoded = HttpResponse(b"a" * 5000, content_type="text/plain")
    encoded["Content-Encoding"] = "gzip"
    assert run(encoded).content == b"a" * 5000
    no_transform = HttpResponse(b"a" * 5000, content_type="text/plain")
    no_transform["Cache-Control"] = "public, no-transform"
    assert "Content-Encoding" not in run(no_transform).headers


@pytest.mark.parametrize("accept", ["br", "gzip"])
def test_body_that_would_grow_goes_out_plain(accept):
    noise = random.Random(1).randbytes(5000)
    response = run(HttpResponse(noise, content_type="text/plain"), accept=accept)
    assert "Content-Encoding" not in response.headers
    assert response.content == noise


@pytest.mark.parametrize("accept", ["br", "gzip"])
def test_streaming_is_compressed_chunk_by_chunk(accept):
    chunks = [orjson.dumps({"n": i, "pad": "p" * 300}) + b"\n" for i in range(20)]
    seen: list[int] = []

    def produce():
        for i, chunk in enumerate(chunks):
            seen.append(i)
            yield chunk

    response = run(StreamingHttpResponse(produce(), content_type="application/x-ndjson"), accept=accept)
    # NDJSON is not in the compressible list; text is.
    assert "Content-Encoding" not in response.headers
    response = run(StreamingHttpResponse(produce(), content_type="text/plain"), accept=accept)
    assert response["Content-Encoding"] == accept and "Content-Length" not in response.headers
    decoder = brotli.Decompressor() if accept == "br" else zlib.decompressobj(wbits=31)
    out = b""
    seen.clear()
    for part in response.streaming_content:
        out += decoder.process(part) if accept == "br" else decoder.decompress(part)
        # Every chunk produced so far can already be decoded: nothing is held back.
        if seen:
            assert out == b"".join(chunks[: seen[-1] + 1])
    assert out == b"".join(chunks)


@pytest.mark.parametrize("accept", ["br", "gzip"])
def test_large_bodies(accept):
    large = orjson.dumps([{"i": i, "body": "word " * 40} for i in range(2000)])
    response = run(HttpResponse(large, content_type="application/json"), accept=accept)
    assert response["Content-Encoding"] == accept
    assert (brotli.decompress(response.content) if accept == "br" else gzip.decompress(response.content)) == large
    assert int(response["Content-Length"]) == len(response.content)


def test_a_cached_history_page_is_compressed_once_and_served_as_stored(history):
    from django.core.cache import cache

    from chat import cache_keys

    client, url = history
    plain = client.get(url).content  # renders and caches the page
    room_id = int(url.split("/")[-2])
    coding, quality, length, data = cache.get(cache_keys.history_page_key(room_id, None, 50))[1]
    assert (coding, quality, length) == ("br", 4, len(plain)) and brotli.decompress(data) == plain
    for _ in range(2):
        response = client.get(url, headers={"Accept-Encoding": BROWSER})
        assert getattr(response, "precompressed", False) and response.content == data
        assert response.headers["Content-Encoding"] == "br" and "X-Noise" in response.headers
        assert int(response.headers["Content-Length"]) == len(data)
        assert "accept-encoding" in response.headers["Vary"].lower()
    # Other clients get what they asked for, from the same entry.
    gzipped = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert not getattr(gzipped, "precompressed", False) and gzip.decompress(gzipped.content) == plain
    assert client.get(url, headers={"Accept-Encoding": "identity"}).content == plain
