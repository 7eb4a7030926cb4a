"""Reactions in two real browsers: Alice reacts, Bob sees it live and joins in, Alice takes hers back."""

from __future__ import annotations

import pytest

from chat.services import messages as message_services
from tests.e2e.test_browser_chat import _expect, log_in, message, open_room, send, world  # noqa: F401 - world is a fixture

pytestmark = pytest.mark.django_db(transaction=True)


def chip(page, text: str, emoji: str):
    return message(page, text).locator("button.reaction", has_text=emoji)


@pytest.fixture
def lunch(world) -> None:
    """Bob's question, written before the browser starts (the ORM refuses to run beside Playwright's loop)."""
    message_services.message_create(room=world["general"], author=world["bob"], body="lunch at noon?")


def test_reactions_live_in_two_browsers(live_server_url, world, lunch, browser, artifacts):
    expect = _expect()
    base = live_server_url
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    open_room(bob, base, "general")

    # Alice picks 👍 from the picker; both pages show it, hers marked as hers.
    item = message(alice, "lunch at noon?")
    item.hover()
    item.locator("button[data-action=react]").click()
    item.locator(".reaction-picker button", has_text="👍").click()
    expect(chip(alice, "lunch at noon?", "👍")).to_have_attribute("aria-pressed", "true")
    expect(chip(bob, "lunch at noon?", "👍")).to_contain_text("1")
    expect(chip(bob, "lunch at noon?", "👍")).to_have_attribute("aria-pressed", "false")

    # Bob clicks the same chip: two, and it is his too now.
    chip(bob, "lunch at noon?", "👍").click()
    expect(chip(bob, "lunch at noon?", "👍")).to_have_attribute("aria-pressed", "true")
    expect(chip(alice, "lunch at noon?", "👍")).to_contain_text("2")

    # Alice takes hers back; a reload shows the server's state (rendered by the template).
    chip(alice, "lunch at noon?", "👍").click()
    expect(chip(bob, "lunch at noon?", "👍")).to_contain_text("1")
    alice.reload()
    expect(chip(alice, "lunch at noon?", "👍")).to_have_attribute("aria-pressed", "false")
    expect(chip(alice, "lunch at noon?", "👍")).to_contain_text("1")
    alice_context.close()
    bob_context.close()


def test_reactions_and_deletes_made_while_away_are_replayed(live_server_url, world, lunch, browser, artifacts):
    """Bob's tab is offline while Alice reacts and deletes; back online, resume replays both (no page fetch)."""
    expect = _expect()
    base = live_server_url
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    open_room(bob, base, "general")
    send(alice, "short-lived")
    expect(message(bob, "short-lived")).to_have_count(1)
    history_requests: list[str] = []
    bob.on("request", lambda request: history_requests.append(request.url) if "/messages" in request.url else None)

    bob_context.set_offline(True)
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "offline")
    item = message(alice, "lunch at noon?")
    item.hover()
    item.locator("button[data-action=react]").click()
    item.locator(".reaction-picker button", has_text="🎉").click()
    expect(chip(alice, "lunch at noon?", "🎉")).to_have_attribute("aria-pressed", "true")
    doomed = message(alice, "short-lived")
    doomed.hover()
    doomed.locator("button[data-action=delete]").click()
    doomed.locator("button[data-action=delete]").click()  # the second click confirms
    expect(message(alice, "short-lived")).to_have_count(0)

    bob_context.set_offline(False)
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "online")
    expect(chip(bob, "lunch at noon?", "🎉")).to_contain_text("1")
    expect(message(bob, "short-lived")).to_have_count(0)
    assert history_requests == []  # resume brought both: no history page was read
    alice_context.close()
    bob_context.close()
