"""Sharing a file in two real browsers: Alice attaches an image, Bob sees its thumbnail and opens it."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image

from tests.e2e.test_browser_chat import _expect, log_in, message, open_room, world  # noqa: F401 - world is a fixture
from tests.servers import background_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(live_server_url) -> Any:
    """The background worker: it makes the thumbnails."""
    with background_worker() as proc:
        yield proc


def test_an_attached_image_is_shared_with_its_thumbnail(live_server_url, world, worker, browser, artifacts, tmp_path):
    expect = _expect()
    base = live_server_url
    picture = tmp_path / "sunset.png"
    Image.new("RGB", (900, 600), "orange").save(picture, format="PNG")
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    open_room(bob, base, "general")

    alice.set_input_files("#composer-file", str(picture))
    expect(alice.locator("#composer-input")).to_have_value(re.compile(r"^\[sunset\.png\]\(</files/\d+/sunset\.png>\)$"))
    url = re.search(r"/files/\d+/sunset\.png", alice.locator("#composer-input").input_value()).group(0)
    alice.locator("#composer-input").press("End")
    alice.locator("#composer-input").type(" the view tonight")
    alice.press("#composer-input", "Enter")

    shared = message(bob, "the view tonight")
    link = shared.locator("a.file")
    expect(link).to_have_attribute("href", url)
    thumb = link.locator("img.file-thumb")
    expect(thumb).to_be_visible()
    bob.wait_for_function("document.querySelector('img.file-thumb')?.naturalWidth === 480")
    # The file itself, for a reader of the room, is the original.
    response = bob.request.get(f"{base}{url}")
    assert response.status == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.body())) as image:
        assert image.size == (900, 600)

    # A file that is too large is refused in the page, before any upload.
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (11 * 1024 * 1024))
    alice.set_input_files("#composer-file", str(big))
    expect(alice.locator("#composer-error")).to_contain_text("too large")
    alice_context.close()
    bob_context.close()
