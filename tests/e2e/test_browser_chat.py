"""Two people chatting in two real browsers against a real server.

The data is created through the services before the browser starts (Django's
ORM refuses to run while Playwright's event loop owns the thread). Waits are
Playwright's condition waits (``expect``), never sleeps followed by asserts.
"""

from __future__ import annotations

from typing import Any

import pytest

from chat.models import Room
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from projects import services as project_services
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_MS = 15_000


@pytest.fixture
def world(live_server_url) -> dict[str, Any]:
    """alice (owner) and bob (member) in project "e2e" with rooms general and random."""
    alice = account_services.user_create(username="alice", password=PASSWORD, first_name="Alice")
    bob = account_services.user_create(username="bob", password=PASSWORD, first_name="Bob")
    project = project_services.project_create(user=alice, name="E2E", slug="e2e")
    project_services.invitation_create(project=project, username="bob", by=alice)
    project_services.invitation_accept(invitation=project.invitations.get(user=bob), user=bob)
    general = Room.objects.select_related("project").get(project=project, slug="general")
    random = room_services.room_create(project=project, user=alice, name="random")
    return {"alice": alice, "bob": bob, "project": project, "general": general, "random": random}


def _expect():
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    return expect


def log_in(browser, base: str, username: str, artifacts) -> tuple[Any, Any]:
    context = browser.new_context()
    page = artifacts.watch(username, context.new_page())
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form.stack-form button[type=submit]")
    page.wait_for_url(f"{base}/")
    return context, page


def open_room(page, base: str, room_slug: str) -> None:
    page.goto(f"{base}/p/e2e/r/{room_slug}/")
    _expect()(page.locator("#conn-status")).to_have_attribute("data-state", "online")


def send(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def message(page, text: str):
    return page.locator("#messages li.msg", has_text=text)


def edit(page, old: str, new: str) -> None:
    item = message(page, old)
    item.hover()
    item.locator("button[data-action=edit]").click()
    item.locator(".msg-editor textarea").fill(new)
    item.locator(".msg-editor button[type=submit]").click()
    _expect()(message(page, new)).to_have_count(1)


def test_two_people_chat_live(live_server_url, world, browser, artifacts):
    expect = _expect()
    base = live_server_url
    _, alice = log_in(browser, base, "alice", artifacts)
    bob_context, bob = log_in(browser, base, "bob", artifacts)
    open_room(alice, base, "general")
    open_room(bob, base, "general")

    # Live both ways, and user text stays text.
    send(alice, "hello bob <b>not bold</b>")
    expect(message(bob, "hello bob <b>not bold</b>")).to_have_count(1)
    expect(message(bob, "hello bob").locator(".msg-author")).to_have_text("Alice")
    assert bob.locator("#messages b").count() == 0
    expect(message(alice, "hello bob")).to_have_count(1)  # alice's own, confirmed once
    expect(alice.locator("#pending li")).to_have_count(0)

    send(bob, "hi alice")
    expect(message(alice, "hi alice")).to_have_count(1)

    # Ids only increase down the list on both screens.
    for page in (alice, bob):
        ids = [int(i) for i in page.locator("#messages li.msg").evaluate_all("els => els.map(e => e.dataset.id)")]
        assert ids == sorted(ids) and len(ids) == 2

    # alice edits, bob sees it.
    edit(alice, "hello bob", "hello bob, edited")
    expect(message(bob, "hello bob, edited")).to_have_count(1)
    expect(message(bob, "hello bob, edited").locator(".msg-edited")).to_have_text("(edited)")

    # bob has no controls on alice's message; alice deletes it and bob sees the tombstone.
    assert message(bob, "hello bob, edited").locator("button[data-action=delete]").count() == 0
    mine = message(alice, "hello bob, edited")
    # Read before deleting: the tombstone no longer has the text this locator looks for.
    tombstone_id = mine.get_attribute("data-id")
    mine.hover()
    mine.locator("button[data-action=delete]").click()
    mine.locator("button[data-action=delete]").click()  # the second click confirms
    expect(bob.locator(f'#messages li.msg[data-id="{tombstone_id}"] .msg-body')).to_have_text("message deleted")
    expect(message(bob, "hello bob, edited")).to_have_count(0)

    # A message in another room bumps bob's sidebar badge.
    random_id = world["random"].id
    open_room(alice, base, "random")
    send(alice, "over in random")
    expect(message(alice, "over in random")).to_have_count(1)
    expect(bob.locator(f'#room-nav a[data-room-id="{random_id}"] .badge')).to_have_text("1")
    open_room(alice, base, "general")

    # bob goes offline: what alice sends meanwhile arrives when he is back
    # (resume), what bob typed while offline is sent then (queue), and an
    # edit made meanwhile shows up too (the client refetches the shown page).
    send(alice, "will change")
    expect(message(bob, "will change")).to_have_count(1)
    bob_context.set_offline(True)
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "offline")
    edit(alice, "will change", "changed while away")
    for i in range(3):
        send(alice, f"while you were away {i}")
        expect(message(alice, f"while you were away {i}")).to_have_count(1)
    send(bob, "typed while offline")
    expect(bob.locator("#pending li", has_text="typed while offline")).to_have_count(1)
    assert message(bob, "while you were away").count() == 0
    bob_context.set_offline(False)
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "online")
    for i in range(3):
        expect(message(bob, f"while you were away {i}")).to_have_count(1)
    expect(message(alice, "typed while offline")).to_have_count(1)
    expect(bob.locator("#pending li")).to_have_count(0)
    expect(message(bob, "typed while offline")).to_have_count(1)
    expect(message(bob, "changed while away")).to_have_count(1)

    # Closing the tab and coming back renders everything from the server.
    bob.close()
    send(alice, "after bob left")
    expect(message(alice, "after bob left")).to_have_count(1)
    bob = artifacts.watch("bob-again", bob_context.new_page())
    open_room(bob, base, "general")
    expect(message(bob, "after bob left")).to_have_count(1)
    texts = bob.locator("#messages li.msg .msg-body").all_text_contents()
    assert texts == [
        "message deleted",
        "hi alice",
        "changed while away",
        "while you were away 0",
        "while you were away 1",
        "while you were away 2",
        "typed while offline",
        "after bob left",
    ]


@pytest.fixture
def long_history(world) -> list[int]:
    """130 messages in general, alternating authors."""
    room, authors = world["general"], (world["alice"], world["bob"])
    return [
        message_services.message_create(room=room, author=authors[i % 2], body=f"history {i:03d}")[0].id for i in range(130)
    ]


def test_load_older_pages_back_through_history(live_server_url, long_history, browser, artifacts):
    expect = _expect()
    base = live_server_url
    _, bob = log_in(browser, base, "bob", artifacts)
    open_room(bob, base, "general")
    items = bob.locator("#messages li.msg")
    expect(items).to_have_count(50)
    expect(bob.locator("#load-older")).to_be_visible()

    bob.click("#load-older")
    expect(items).to_have_count(100)
    bob.click("#load-older")
    expect(items).to_have_count(130)
    expect(bob.locator("#load-older")).to_be_hidden()
    expect(bob.locator("#history-start")).to_be_visible()

    ids = [int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.id)")]
    assert ids == long_history
    assert items.first.locator(".msg-body").text_content() == "history 000"
