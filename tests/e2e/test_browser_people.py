"""Who is here, who is typing, mentions, new direct messages, notifications and the room list on phones.

Two real browsers against a real server, as in test_browser_chat.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import PASSWORD
from tests.servers import background_worker
from tests.e2e.test_browser_chat import _expect, log_in, message, open_room, send, world  # noqa: F401 - world is a fixture

pytestmark = pytest.mark.django_db(transaction=True)

# The page's Notification, recorded: a headless browser shows none, and whether the
# page asks for one, with what, is what is tested. The tab is "in the background".
NOTIFICATIONS_RECORDED = """
window.__notes = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notes.push({ title, body: options.body, tag: options.tag }); }
  addEventListener() {}
  close() {}
};
Object.defineProperty(document, "visibilityState", { get: () => "hidden" });
"""


def log_in_with(browser: Any, base: str, username: str, artifacts: Any, **context_options: Any) -> tuple[Any, Any]:
    context = browser.new_context(**context_options)
    page = artifacts.watch(username, context.new_page())
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form.stack-form button[type=submit]")
    page.wait_for_url(f"{base}/")
    return context, page


def test_typing_and_who_is_online(live_server_url, world, browser, artifacts):
    expect = _expect()
    base = live_server_url
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    expect(alice.locator("#online-count")).to_have_text("1 online")
    open_room(bob, base, "general")
    expect(alice.locator("#online-count")).to_have_text("2 online")
    expect(bob.locator("#online-count")).to_have_text("2 online")

    bob.fill("#composer-input", "let me think")
    bob.locator("#composer-input").press_sequentially("…")
    expect(alice.locator("#typing")).to_have_text("Bob is typing…")
    expect(bob.locator("#typing")).to_have_text("")  # nobody sees themselves typing
    bob.press("#composer-input", "Enter")
    expect(message(alice, "let me think")).to_have_count(1)
    expect(alice.locator("#typing")).to_have_text("")  # the message ends it

    bob_context.close()
    expect(alice.locator("#online-count")).to_have_text("1 online")
    alice_context.close()


@pytest.fixture
def worker(live_server_url) -> Any:
    """The background worker: it turns new DM messages and @mentions into ``mention`` events."""
    with background_worker() as proc:
        yield proc


def test_a_new_direct_message_and_a_mention_show_in_the_sidebar_and_notify(live_server_url, world, worker, browser, artifacts):
    expect = _expect()
    base = live_server_url
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    bob.add_init_script(NOTIFICATIONS_RECORDED)
    open_room(bob, base, "random")
    open_room(alice, base, "general")
    assert bob.locator("#dm-nav a.dm-link").count() == 0

    # Alice starts a DM with Bob after his page was rendered: it appears, marked, and he is notified.
    alice.locator(".dm-new summary").click()
    alice.fill("#dm-nav-form input[name=users]", "bob")
    alice.click("#dm-nav-form button[type=submit]")
    expect(alice.locator("#conn-status")).to_have_attribute("data-state", "online")
    send(alice, "got a minute?")
    expect(message(alice, "got a minute?")).to_have_count(1)
    dm_link = bob.locator("#dm-nav a.dm-link", has_text="Alice")
    expect(dm_link).to_have_count(1)
    expect(dm_link.locator(".mention-mark")).to_have_count(1)
    expect(dm_link.locator(".badge")).to_have_text("1")
    notes = bob.evaluate("window.__notes")
    assert notes == [{"title": "Alice", "body": "got a minute?", "tag": notes[0]["tag"]}]

    # A later message in the DM reaches Bob's new link live: he follows it now.
    send(alice, "it is about lunch")
    expect(dm_link.locator(".badge")).to_have_text("2")

    # A mention in a room Bob is not looking at marks that room and notifies him.
    open_room(alice, base, "general")
    send(alice, "@bob see the plan")
    general = bob.locator(f'#room-nav a[data-room-id="{world["general"].id}"]')
    expect(general.locator(".mention-mark")).to_have_count(1)
    expect(general.locator(".badge")).to_have_text("1")
    bob.wait_for_function("window.__notes.length === 3")
    assert bob.evaluate("window.__notes[2].title") == "Alice mentioned you in #general"
    # Opening the DM shows it: its page is the conversation.
    dm_link.click()
    expect(message(bob, "it is about lunch")).to_have_count(1)
    alice_context.close()
    bob_context.close()


def test_notifications_are_asked_for_only_on_a_click(live_server_url, world, browser, artifacts):
    expect = _expect()
    context, page = log_in(browser, live_server_url, "bob", artifacts)
    open_room(page, live_server_url, "general")
    # A fresh profile has not decided: the page offers the button and asks nothing by itself.
    assert page.evaluate("Notification.permission") == "default"
    expect(page.locator("#notify-enable")).to_be_visible()
    context.close()


def test_the_room_list_opens_as_a_drawer_on_a_phone(live_server_url, world, browser, artifacts):
    expect = _expect()
    base = live_server_url
    context, phone = log_in_with(browser, base, "bob", artifacts, viewport={"width": 390, "height": 800}, has_touch=True)
    open_room(phone, base, "general")
    sidebar = phone.locator("#sidebar")
    expect(sidebar).to_be_hidden()
    phone.click("#rooms-open")
    expect(sidebar).to_be_visible()
    expect(phone.locator("#rooms-open")).to_have_attribute("aria-expanded", "true")
    phone.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    phone.click("#rooms-open")
    sidebar.locator("a.room-link", has_text="random").click()
    phone.wait_for_url(f"{base}/p/e2e/r/random/")
    expect(phone.locator("#conn-status")).to_have_attribute("data-state", "online")
    expect(phone.locator("#sidebar")).to_be_hidden()
    context.close()
