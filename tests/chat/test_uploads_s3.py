"""Shared files in an S3-compatible bucket (FILE_STORAGE=s3, django-storages), against a real server.

The server is moto's standalone S3-compatible server (PyPI ``moto[server]``),
started on a free loopback port for this module: the storage speaks HTTP to
it as it would to any bucket. Readers are redirected to a signed URL that
expires; the bucket itself refuses an unsigned request.
"""

from __future__ import annotations

import io
import socket
from typing import Any, Iterator

import boto3
import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from chat.models import Upload
from chat.services import uploads as upload_services
from chatsite.settings.base import s3_storage
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

BUCKET = "chat-files"
KEYS = {"access_key": "test-access-key", "secret_key": "test-secret-key"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        bucket_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def bucket_client(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=KEYS["access_key"], aws_secret_access_key=KEYS["secret_key"],
    )  # fmt: skip


@pytest.fixture
def s3(settings, s3_endpoint) -> str:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": s3_storage(bucket=BUCKET, endpoint_url=s3_endpoint, region="us-east-1", expire=60, **KEYS),
    }
    return s3_endpoint


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (800, 200), "teal").save(out, format="PNG")
    return out.getvalue()


def session(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_files_go_to_the_bucket_and_readers_get_a_signed_link(chat_world, api_client, s3):
    room, member = chat_world["public"], chat_world["member"]
    response = api_client(member).post(f"/api/v1/rooms/{room.id}/uploads", {"file": SimpleUploadedFile("chart.png", png())})
    assert response.status_code == 201, response.content
    item = response.json()
    stored = Upload.objects.get(pk=item["id"]).file.name
    listing = bucket_client(s3).list_objects_v2(Bucket=BUCKET)
    assert stored in {entry["Key"] for entry in listing["Contents"]}

    # A reader of the room is sent to a signed URL of the bucket, which serves the file as an image.
    got = session(chat_world["owner"]).get(item["url"])
    assert got.status_code == 302 and got["Location"].startswith(s3) and "Signature" in got["Location"]
    assert "no-store" in got["Cache-Control"]
    fetched = httpx.get(got["Location"])
    assert fetched.status_code == 200 and fetched.content == png()
    assert fetched.headers["content-type"] == "image/png" and fetched.headers["content-disposition"].startswith("inline")
    # Without the signature the bucket refuses; someone outside the room gets no link at all.
    assert httpx.get(got["Location"].split("?")[0]).status_code == 403
    assert session(chat_world["outsider"]).get(item["url"]).status_code == 404

    # The worker reads the original from the bucket and writes the thumbnail there.
    assert upload_services.upload_thumbnail(upload_id=item["id"]) is True
    thumb = session(member).get(f"/files/{item['id']}/thumb")
    assert thumb.status_code == 302
    with Image.open(io.BytesIO(httpx.get(thumb["Location"]).content)) as image:
        assert image.size == (480, 120)


def test_other_files_come_from_the_bucket_as_attachments(chat_world, api_client, s3):
    room, member = chat_world["public"], chat_world["member"]
    item = api_client(member).post(
        f"/api/v1/rooms/{room.id}/uploads", {"file": SimpleUploadedFile("notes.txt", b"<html>not a page</html>")}
    ).json()
    got = api_client(member).get(f"/api/v1/files/{item['id']}")
    assert got.status_code == 302
    fetched = httpx.get(got["Location"])
    assert fetched.content == b"<html>not a page</html>"
    assert fetched.headers["content-disposition"].startswith("attachment") and fetched.headers["content-type"] == "text/plain"
