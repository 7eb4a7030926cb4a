"""Message search in real browsers: the box in the room header, highlighted results, the keyboard, the jump
to an old message (loading older history) and to another room, a reply's thread, and a phone's screen."""

from __future__ import annotations

from typing import Any

import pytest

from chat.models import Room
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from projects import services as project_services
from tests.conftest import PASSWORD
from tests.e2e.test_browser_chat import _expect, log_in, message, open_room
from tests.e2e.test_browser_threads import _log_in_on_a_phone

pytestmark = pytest.mark.django_db(transaction=True)

RELEASE = "the release train leaves on friday"
XSS = "<img src=x onerror=\"document.title='pwned'\"> release <b>bold</b>"
FILLER = 120  # more than two history pages after the release note: jumping to it loads older messages


@pytest.fixture
def team(live_server_url) -> dict[str, Any]:
    bob = account_services.user_create(username="bob", password=PASSWORD, first_name="Bob")
    alice = account_services.user_create(username="alice", password=PASSWORD, first_name="Alice")
    project = project_services.project_create(user=bob, name="E2E", slug="e2e")
    project_services.invitation_create(project=project, username="alice", by=bob)
    project_services.invitation_accept(invitation=project.invitations.get(user=alice), user=alice)
    general = Room.objects.select_related("project").get(project=project, slug="general")
    ops = room_services.room_create(project=project, user=bob, name="ops")
    release = message_services.message_create(room=general, author=bob, body=RELEASE)[0]
    for n in range(FILLER):
        message_services.message_create(room=general, author=alice if n % 2 else bob, body=f"chatter {n}")
    root = message_services.message_create(room=ops, author=bob, body="deploy checklist")[0]
    reply = message_services.message_create(room=ops, author=alice, body="release notes are ready", thread_root=root.id)[0]
    message_services.message_create(room=ops, author=bob, body=XSS)
    return {"general": general, "ops": ops, "release": release, "reply": reply}


def results(page):
    return page.locator("#search-list a.search-hit")


def test_search_finds_highlights_and_jumps(live_server_url, team, browser, artifacts):
    expect = _expect()
    base = live_server_url
    _, alice = log_in(browser, base, "alice", artifacts)
    open_room(alice, base, "general")
    expect(message(alice, RELEASE)).to_have_count(0)  # not in the newest pages

    alice.fill("#search-input", "release")
    alice.press("#search-input", "Enter")
    expect(alice.locator("#search-results")).to_be_visible()
    expect(results(alice)).to_have_count(3)
    expect(alice.locator("#search-status")).to_have_text("3 messages found")
    # Highlights are <mark>s; the hostile body is shown as text and runs nothing.
    expect(alice.locator("#search-list mark").first).to_have_text("release")
    hostile = results(alice).filter(has_text="onerror")
    expect(hostile).to_have_count(1)
    assert hostile.locator("img, b").count() == 0
    assert alice.title() != "pwned"
    expect(results(alice).filter(has_text="release notes")).to_contain_text("#ops · thread")

    # Keyboard: down from the box into the results, Escape back to the box.
    alice.press("#search-input", "ArrowDown")
    expect(results(alice).first).to_be_focused()
    alice.keyboard.press("ArrowDown")
    expect(results(alice).nth(1)).to_be_focused()
    alice.keyboard.press("Escape")
    expect(alice.locator("#search-results")).to_be_hidden()
    expect(alice.locator("#search-input")).to_be_focused()

    # The release note is in this room, three pages back: the jump loads older history and flashes it.
    alice.press("#search-input", "Enter")
    results(alice).filter(has_text="release train").click()
    expect(message(alice, RELEASE)).to_be_visible()
    expect(message(alice, RELEASE)).to_be_in_viewport()
    expect(message(alice, RELEASE)).to_be_focused()

    # A reply in another room opens that room with its thread.
    alice.fill("#search-input", "notes")
    alice.press("#search-input", "Enter")
    expect(results(alice)).to_have_count(1)
    results(alice).first.click()
    alice.wait_for_url(f"{base}/p/e2e/r/ops/**")
    expect(alice.locator("#thread-panel")).to_be_visible()
    expect(alice.locator("#thread-replies")).to_contain_text("release notes are ready")


def test_filters_and_errors_show_in_the_results(live_server_url, team, browser, artifacts):
    expect = _expect()
    base = live_server_url
    _, bob = log_in(browser, base, "bob", artifacts)
    open_room(bob, base, "ops")
    bob.fill("#search-input", "release in:general")
    bob.press("#search-input", "Enter")
    expect(results(bob)).to_have_count(1)
    expect(results(bob).first).to_contain_text("#general")
    bob.fill("#search-input", "release has:link")
    bob.press("#search-input", "Enter")
    expect(bob.locator("#search-status")).to_contain_text("is not a filter")
    expect(results(bob)).to_have_count(0)


def test_search_on_a_phone_spans_the_screen_under_the_box(live_server_url, team, browser, artifacts):
    expect = _expect()
    base = live_server_url
    _, bob = _log_in_on_a_phone(browser, base, "bob", artifacts)
    open_room(bob, base, "ops")
    expect(bob.locator("#search-input")).to_be_visible()
    bob.fill("#search-input", "release")
    bob.press("#search-input", "Enter")
    expect(results(bob)).to_have_count(3)
    box = bob.locator("#search-results").bounding_box()
    assert box["x"] == 0 and box["width"] == 375  # the whole width of the screen
    field = bob.locator("#search-input").bounding_box()
    assert field["y"] + field["height"] <= box["y"]  # under the box, which stays in view
    expect(bob.locator("#search-input")).to_be_in_viewport()
    results(bob).filter(has_text="release train").click()
    bob.wait_for_url(f"{base}/p/e2e/r/general/**")
    expect(message(bob, RELEASE)).to_be_in_viewport()
