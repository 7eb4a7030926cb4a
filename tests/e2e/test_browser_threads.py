"""Threads in real browsers: replies live in the side panel, never in the main list, and the summary line on the root."""

from __future__ import annotations

from typing import Any

import pytest

from chat.services import messages as message_services
from tests.conftest import PASSWORD
from tests.e2e.test_browser_chat import _expect, log_in, message, open_room, world  # noqa: F401 - world is a fixture

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "who reviews the release notes?"


@pytest.fixture
def question(world) -> int:
    """Bob's question, written before the browser starts (the ORM refuses to run beside Playwright's loop)."""
    return message_services.message_create(room=world["general"], author=world["bob"], body=QUESTION)[0].id


@pytest.fixture
def answered(world, question) -> int:
    """Bob's question with one reply from Alice already."""
    message_services.message_create(room=world["general"], author=world["alice"], body="on it", thread_root=question)
    return question


def panel(page):
    return page.locator("#thread-panel")


def reply(page, text: str):
    return page.locator("#thread-replies li.msg", has_text=text)


def summary(page, text: str):
    return message(page, text).locator(".thread-summary")


def send_reply(page, text: str) -> None:
    page.fill("#thread-input", text)
    page.press("#thread-input", "Enter")


def test_thread_replies_live_in_two_browsers(live_server_url, world, question, browser, artifacts):
    expect = _expect()
    base = live_server_url
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    open_room(bob, base, "general")

    # Alice replies to Bob's question from its Reply action; the panel is named and holds the root.
    item = message(alice, QUESTION)
    item.hover()
    item.locator("button[data-action=reply]").click()
    expect(alice.get_by_role("complementary", name="Thread")).to_be_visible()
    expect(panel(alice).locator("#thread-root li.msg")).to_contain_text(QUESTION)
    expect(alice.locator("#thread-input")).to_be_focused()
    send_reply(alice, "I can take it")
    expect(reply(alice, "I can take it")).to_have_count(1)
    expect(alice.locator("#thread-pending li")).to_have_count(0)

    # Bob sees the summary line appear live; the reply stays out of both main lists.
    expect(summary(bob, QUESTION)).to_contain_text("1 reply")
    expect(summary(bob, QUESTION)).to_contain_text("Last reply")
    expect(summary(bob, QUESTION).locator(".thread-avatar")).to_have_text(["A"])
    for page in (alice, bob):
        expect(page.locator("#messages li.msg")).to_have_count(1)
        expect(message(page, "I can take it")).to_have_count(0)

    # Bob opens the thread from the summary line, sees Alice's reply and answers.
    summary(bob, QUESTION).click()
    expect(panel(bob)).to_be_visible()
    expect(reply(bob, "I can take it")).to_have_count(1)
    send_reply(bob, "thanks, Alice")
    expect(reply(bob, "thanks, Alice")).to_have_count(1)
    expect(bob.locator("#thread-follow")).to_have_attribute("aria-pressed", "true")  # replying follows

    # Alice sees Bob's reply live in her open panel, in order, and the count moves on both sides.
    expect(reply(alice, "thanks, Alice")).to_have_count(1)
    texts = alice.locator("#thread-replies li.msg .msg-body").all_text_contents()
    assert texts == ["I can take it", "thanks, Alice"]
    expect(summary(alice, QUESTION)).to_contain_text("2 replies")
    expect(summary(bob, QUESTION)).to_contain_text("2 replies")
    expect(alice.locator("#messages li.msg")).to_have_count(1)

    # Bob drops off with the panel open: Alice's reply comes back through resume, his own
    # reply waits in the outbox, and neither lands in the main list.
    bob_context.set_offline(True)
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "offline")
    send_reply(alice, "while you were away")
    expect(reply(alice, "while you were away")).to_have_count(1)
    send_reply(bob, "typed offline")
    expect(bob.locator("#thread-pending li", has_text="typed offline")).to_contain_text("Waiting for connection")
    bob_context.set_offline(False)
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "online")
    expect(reply(bob, "while you were away")).to_have_count(1)
    expect(reply(bob, "typed offline")).to_have_count(1)
    expect(reply(alice, "typed offline")).to_have_count(1)
    expect(bob.locator("#thread-pending li")).to_have_count(0)
    expect(summary(bob, QUESTION)).to_contain_text("4 replies")
    expect(bob.locator("#messages li.msg")).to_have_count(1)

    # Reactions in the panel: Bob picks one on Alice's reply, Alice joins in with the chip.
    theirs = reply(bob, "I can take it")
    theirs.hover()
    theirs.locator("button[data-action=react]").click()
    theirs.locator(".reaction-picker button", has_text="🎉").click()
    expect(reply(alice, "I can take it").locator("button.reaction", has_text="🎉")).to_contain_text("1")
    reply(alice, "I can take it").locator("button.reaction", has_text="🎉").click()
    expect(reply(bob, "I can take it").locator("button.reaction", has_text="🎉")).to_contain_text("2")

    # Unfollow from the header; Escape closes the panel and gives focus back to the summary line.
    bob.click("#thread-follow")
    expect(bob.locator("#thread-follow")).to_have_attribute("aria-pressed", "false")
    bob.locator("#thread-input").focus()
    bob.keyboard.press("Escape")
    expect(panel(bob)).to_be_hidden()
    expect(summary(bob, QUESTION)).to_be_focused()

    # A reload renders the summary line on the server, and still no reply in the main list.
    bob.reload()
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "online")
    expect(summary(bob, QUESTION)).to_contain_text("4 replies")
    expect(bob.locator("#messages li.msg")).to_have_count(1)
    html = bob_context.request.get(f"{base}/p/e2e/r/general/").text()
    assert 'class="thread-summary"' in html and "4 replies" in html
    assert "thanks, Alice" not in html and "typed offline" not in html
    alice_context.close()
    bob_context.close()


def _log_in_on_a_phone(browser, base: str, username: str, artifacts) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 375, "height": 800}, is_mobile=True, has_touch=True)
    page = artifacts.watch(f"{username}-phone", context.new_page())
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form.stack-form button[type=submit]")
    page.wait_for_url(f"{base}/")
    return context, page


def test_thread_panel_is_full_screen_on_a_phone(live_server_url, world, answered, browser, artifacts):
    expect = _expect()
    base = live_server_url
    context, bob = _log_in_on_a_phone(browser, base, "bob", artifacts)
    open_room(bob, base, "general")

    # No hover on a touch screen: Reply is in view as it is.
    message(bob, QUESTION).locator("button[data-action=reply]").tap()
    dialog = bob.get_by_role("dialog", name="Thread")
    expect(dialog).to_be_visible()
    expect(reply(bob, "on it")).to_have_count(1)
    box = panel(bob).bounding_box()
    assert box == {"x": 0, "y": 0, "width": 375, "height": 800}
    expect(bob.locator("#thread-input")).to_be_in_viewport()

    bob.locator("#thread-close").tap()
    expect(panel(bob)).to_be_hidden()
    expect(bob.locator("#composer-input")).to_be_in_viewport()
    context.close()
