"""Pins and saved messages in real browsers: live pin markers and counts, the lists in the side panel, saves across tabs."""

from __future__ import annotations

import re
from typing import Any

import pytest

from chat.models import Room
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import pins as pin_services
from projects import services as project_services
from tests.conftest import PASSWORD
from tests.e2e.test_browser_chat import _expect, log_in, message, open_room
from tests.e2e.test_browser_threads import _log_in_on_a_phone

pytestmark = pytest.mark.django_db(transaction=True)

RELEASE = "the release is on friday"
LUNCH = "lunch at the usual place"
FILLER = 40


@pytest.fixture
def team(live_server_url) -> dict[str, Any]:
    """bob owns project "e2e"; alice is a plain member. Bob's release note, then enough chatter to scroll it away."""
    bob = account_services.user_create(username="bob", password=PASSWORD, first_name="Bob")
    alice = account_services.user_create(username="alice", password=PASSWORD, first_name="Alice")
    project = project_services.project_create(user=bob, name="E2E", slug="e2e")
    project_services.invitation_create(project=project, username="alice", by=bob)
    project_services.invitation_accept(invitation=project.invitations.get(user=alice), user=alice)
    general = Room.objects.select_related("project").get(project=project, slug="general")
    release = message_services.message_create(room=general, author=bob, body=RELEASE)[0]
    for n in range(FILLER):
        message_services.message_create(room=general, author=alice if n % 2 else bob, body=f"chatter {n}")
    message_services.message_create(room=general, author=bob, body=LUNCH)
    return {"alice": alice, "bob": bob, "general": general, "release": release}


def side_panel(page):
    return page.locator("#thread-panel")


def listed(page, text: str):
    return page.locator("#side-list li.side-item", has_text=text)


def test_pins_and_saves_live(live_server_url, team, browser, artifacts):
    expect = _expect()
    base = live_server_url
    alice_context, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    open_room(bob, base, "general")
    expect(alice.locator("#pins-open")).to_have_text("Pinned (0)")

    # Alice reads Bob's message but may not pin it: Save only.
    assert message(alice, RELEASE).locator("button[data-action=pin]").count() == 0
    expect(message(alice, RELEASE).locator("button[data-action=save]")).to_have_text("Save")

    # Bob pins his own message; Alice sees the marker and the count live.
    theirs = message(bob, RELEASE)
    theirs.scroll_into_view_if_needed()
    theirs.hover()
    theirs.locator("button[data-action=pin]").click()
    expect(theirs.locator("button[data-action=pin]")).to_have_text("Unpin")
    expect(message(alice, RELEASE).locator(".msg-pin")).to_be_visible()
    expect(message(alice, RELEASE).locator(".msg-pin")).to_have_attribute("title", "Pinned by Bob")
    expect(alice.locator("#pins-open")).to_have_text("Pinned (1)")
    expect(message(alice, RELEASE)).not_to_be_in_viewport()

    # Alice opens the pinned list: who pinned it, no Unpin for her, and Jump brings the message into view.
    alice.click("#pins-open")
    expect(alice.get_by_role("complementary", name="Pinned messages")).to_be_visible()
    expect(alice.locator("#pins-open")).to_have_attribute("aria-expanded", "true")
    expect(listed(alice, RELEASE)).to_contain_text("Pinned by Bob")
    expect(listed(alice, RELEASE).locator(".msg-author")).to_have_text("Bob")
    assert listed(alice, RELEASE).locator("button[data-action=unpin]").count() == 0
    listed(alice, RELEASE).locator("button[data-action=jump]").click()
    expect(message(alice, RELEASE)).to_have_class(re.compile(r"\bjumped\b"))
    expect(message(alice, RELEASE)).to_be_in_viewport()

    # A second tab of Alice's keeps its saved list open.
    tab = artifacts.watch("alice-tab", alice_context.new_page())
    open_room(tab, base, "general")
    tab.click("#saved-open")
    expect(tab.get_by_role("complementary", name="Saved messages")).to_be_visible()
    expect(tab.locator("#list-note")).to_have_text("You have not saved any messages yet.")

    # Alice saves Bob's lunch message in the first tab; the other tab follows through the user event.
    lunch = message(alice, LUNCH)
    lunch.scroll_into_view_if_needed()
    lunch.hover()
    lunch.locator("button[data-action=save]").click()
    expect(lunch.locator("button[data-action=save]")).to_have_text("Unsave")
    expect(listed(tab, LUNCH)).to_contain_text("In this room")
    expect(message(tab, LUNCH).locator("button[data-action=save]")).to_have_text("Unsave")

    # Her own Saved list shows it; opening it replaces the pinned list in the same panel.
    alice.click("#saved-open")
    expect(alice.get_by_role("complementary", name="Saved messages")).to_be_visible()
    expect(alice.locator("#pins-open")).to_have_attribute("aria-expanded", "false")
    expect(listed(alice, LUNCH).locator(".msg-body")).to_have_text(LUNCH)
    expect(alice.locator("#side-list li")).to_have_count(1)

    # Unsave from the list: gone in both tabs, and the button reads Save again.
    listed(alice, LUNCH).locator("button[data-action=unsave]").click()
    expect(listed(alice, LUNCH)).to_have_count(0)
    expect(alice.locator("#list-note")).to_have_text("You have not saved any messages yet.")
    expect(listed(tab, LUNCH)).to_have_count(0)
    expect(message(tab, LUNCH).locator("button[data-action=save]")).to_have_text("Save")
    expect(message(alice, LUNCH).locator("button[data-action=save]")).to_have_text("Save")

    # Escape closes the panel and gives focus back to the header button.
    alice.keyboard.press("Escape")
    expect(side_panel(alice)).to_be_hidden()
    expect(alice.locator("#saved-open")).to_be_focused()

    # Bob unpins; Alice's marker and count follow. A reload reads the pins again.
    theirs.hover()
    theirs.locator("button[data-action=pin]").click()
    expect(alice.locator("#pins-open")).to_have_text("Pinned (0)")
    expect(message(alice, RELEASE).locator(".msg-pin")).to_have_count(0)
    alice.reload()
    expect(alice.locator("#pins-open")).to_have_text("Pinned (0)")
    alice_context.close()
    bob_context.close()


@pytest.fixture
def pinned(team) -> None:
    pin_services.pin_create(message=team["release"], by=team["bob"])


def test_pinned_list_on_a_phone(live_server_url, team, pinned, browser, artifacts):
    expect = _expect()
    base = live_server_url
    context, bob = _log_in_on_a_phone(browser, base, "bob", artifacts)
    open_room(bob, base, "general")

    # The header's buttons fit beside the room's name.
    for button in ("#pins-open", "#saved-open"):
        expect(bob.locator(button)).to_be_in_viewport(ratio=1)
    expect(bob.locator("#pins-open")).to_have_text("Pinned (1)")
    bob.locator("#pins-open").tap()
    dialog = bob.get_by_role("dialog", name="Pinned messages")
    expect(dialog).to_be_visible()
    assert side_panel(bob).bounding_box() == {"x": 0, "y": 0, "width": 375, "height": 800}
    expect(listed(bob, RELEASE).locator("button[data-action=unpin]")).to_be_visible()

    # Jump closes the full-screen list to show the message.
    listed(bob, RELEASE).locator("button[data-action=jump]").tap()
    expect(side_panel(bob)).to_be_hidden()
    expect(message(bob, RELEASE)).to_be_in_viewport()
    expect(message(bob, RELEASE)).to_be_focused()
    context.close()
