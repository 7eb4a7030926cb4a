"""The threads you follow in real browsers: the header's Threads button, its live unread badge, and the list in the side panel."""

from __future__ import annotations

import re

import pytest

from chat.services import messages as message_services
from tests.e2e.test_browser_chat import _expect, log_in, message, open_room, world  # noqa: F401 - world is a fixture
from tests.e2e.test_browser_threads import _log_in_on_a_phone, reply, send_reply

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "does anyone have the staging password?"
ELSEWHERE = "random thought: a team lunch"


@pytest.fixture
def question(world) -> int:
    """Alice's question in general, written before the browser starts (the ORM refuses to run beside Playwright's loop)."""
    return message_services.message_create(room=world["general"], author=world["alice"], body=QUESTION)[0].id


@pytest.fixture
def elsewhere(world) -> int:
    """Alice's message in random with one reply from Bob already: she follows that thread, one reply unread."""
    root = message_services.message_create(room=world["random"], author=world["alice"], body=ELSEWHERE)[0].id
    message_services.message_create(room=world["random"], author=world["bob"], body="count me in", thread_root=root)
    return root


def listed(page, text: str):
    return page.locator("#side-list li.followed-item", has_text=text)


def test_followed_thread_badge_and_list_live(live_server_url, world, question, browser, artifacts):
    expect = _expect()
    base = live_server_url
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    open_room(bob, base, "general")
    expect(alice.locator("#threads-open")).to_be_visible()
    expect(alice.locator("#threads-unread")).to_be_hidden()

    # Bob replies on Alice's message: she follows the thread she started, and her badge counts it live.
    theirs = message(bob, QUESTION)
    theirs.hover()
    theirs.locator("button[data-action=reply]").click()
    send_reply(bob, "it is in the vault")
    expect(reply(bob, "it is in the vault")).to_have_count(1)
    expect(alice.locator("#threads-unread")).to_have_text("1")
    expect(alice.locator("#threads-unread")).to_be_visible()
    expect(alice.locator("#threads-open")).to_have_attribute("title", "1 unread reply in threads you follow")

    # The Threads list in the side panel: the root, its summary and its unread count.
    alice.click("#threads-open")
    expect(alice.get_by_role("complementary", name="Threads")).to_be_visible()
    expect(alice.locator("#threads-open")).to_have_attribute("aria-expanded", "true")
    item = listed(alice, QUESTION)
    expect(item).to_have_count(1)
    expect(item.locator(".msg-author")).to_have_text("Alice")
    expect(item.locator(".followed-unread")).to_have_text("1 unread")
    expect(item.locator(".followed-open")).to_contain_text("1 reply")
    expect(item.locator(".followed-open")).to_contain_text("Last reply")
    expect(item.locator(".side-note")).to_have_text("In this room")

    # Opening it shows the thread in the panel; reading it there clears the badge.
    item.locator(".followed-open").click()
    expect(alice.get_by_role("complementary", name="Thread")).to_be_visible()
    expect(reply(alice, "it is in the vault")).to_have_count(1)
    expect(alice.locator("#threads-unread")).to_be_hidden()
    expect(alice.locator("#threads-open")).to_have_attribute("aria-expanded", "false")

    # Back in the list, the thread is there with nothing unread, and the count stays down after a reload.
    alice.click("#threads-open")
    expect(listed(alice, QUESTION)).to_have_count(1)
    expect(listed(alice, QUESTION).locator(".followed-unread")).to_have_count(0)
    alice.reload()
    expect(alice.locator("#conn-status")).to_have_attribute("data-state", "online")
    alice.click("#threads-open")
    expect(listed(alice, QUESTION)).to_have_count(1)
    expect(listed(alice, QUESTION).locator(".followed-unread")).to_have_count(0)
    expect(alice.locator("#threads-unread")).to_be_hidden()
    alice_context.close()
    bob_context.close()


def test_followed_thread_of_another_room_on_a_phone(live_server_url, world, elsewhere, browser, artifacts):
    expect = _expect()
    base = live_server_url
    context, alice = _log_in_on_a_phone(browser, base, "alice", artifacts)
    open_room(alice, base, "general")
    expect(alice.locator("#threads-unread")).to_have_text("1")
    expect(alice.locator("#threads-open")).to_be_in_viewport()

    # The list covers the screen; a thread of another room links to that room's page.
    alice.locator("#threads-open").tap()
    expect(alice.get_by_role("dialog", name="Threads")).to_be_visible()
    assert alice.locator("#thread-panel").bounding_box() == {"x": 0, "y": 0, "width": 375, "height": 800}
    item = listed(alice, ELSEWHERE)
    expect(item.locator(".side-note")).to_have_text("In #random")
    link = item.locator("a.followed-open")
    expect(link).to_have_attribute("href", re.compile(rf"/p/e2e/r/random/#thread-{elsewhere}$"))

    # There the thread opens by itself and is read.
    link.tap()
    alice.wait_for_url(re.compile(r"/p/e2e/r/random/"))
    expect(alice.get_by_role("dialog", name="Thread")).to_be_visible()
    expect(reply(alice, "count me in")).to_have_count(1)
    expect(alice.locator("#threads-unread")).to_be_hidden()
    context.close()
