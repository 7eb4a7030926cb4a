"""Rich text in two real browsers: Markdown shows formatted, live and on a reload; edits start from the source."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser_chat import _expect, log_in, message, open_room, send, world  # noqa: F401 - world is a fixture

pytestmark = pytest.mark.django_db(transaction=True)

SOURCE = "**ship it** with `make test`, see https://example.com and #random, @bob"


def check_rendered(page, base: str) -> None:
    expect = _expect()
    item = message(page, "ship it")
    expect(item.locator(".msg-body strong")).to_have_text("ship it")
    expect(item.locator(".msg-body code")).to_have_text("make test")
    link = item.locator('.msg-body a[href="https://example.com"]')
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow ugc")
    expect(item.locator(".msg-body a.room-ref")).to_have_attribute("href", "/p/e2e/r/random/")
    expect(item.locator(".msg-body .mention")).to_have_text("@bob")


def test_markdown_live_on_reload_and_in_the_editor(live_server_url, world, browser, artifacts):
    expect = _expect()
    base = live_server_url
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    open_room(bob, base, "general")
    send(alice, SOURCE)
    check_rendered(bob, base)  # live
    expect(message(bob, "ship it").locator(".mention")).to_have_class("mention mention-me")
    expect(message(alice, "ship it").locator(".mention")).to_have_class("mention")
    send(alice, "<b>not bold</b>")
    expect(message(bob, "<b>not bold</b>")).to_have_count(1)  # shown as written
    assert message(bob, "not bold").locator("b").count() == 0

    bob.reload()
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "online")
    check_rendered(bob, base)  # rendered by the server
    expect(message(bob, "ship it").locator(".mention")).to_have_class("mention mention-me")

    # Editing starts from what was written, not from what shows.
    mine = message(alice, "ship it")
    mine.hover()
    mine.locator("button[data-action=edit]").click()
    expect(mine.locator(".msg-editor textarea")).to_have_value(SOURCE)
    mine.locator(".msg-editor textarea").fill("*shipped*")
    mine.locator(".msg-editor button[type=submit]").click()
    expect(message(bob, "shipped").locator(".msg-body em")).to_have_text("shipped")
    alice_context.close()
    bob_context.close()
