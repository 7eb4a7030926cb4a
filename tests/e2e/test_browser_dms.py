"""A direct message between two people in two real browsers against a real server.

Alice starts it from the sidebar's "New message" form; Bob finds it in his
sidebar, sees her messages arrive live, and gets a live badge on it while he
is in another room.
"""

from __future__ import annotations

from typing import Any

import pytest

from chat.services import accounts as account_services
from projects import services as project_services
from tests.conftest import PASSWORD
from tests.e2e.test_browser_chat import _expect, log_in, message, open_room, send

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(live_server_url) -> dict[str, Any]:
    """alice (owner) and bob (member) in project "e2e"; carol is a member who is not in the DM."""
    alice = account_services.user_create(username="alice", password=PASSWORD, first_name="Alice")
    bob = account_services.user_create(username="bob", password=PASSWORD, first_name="Bob")
    carol = account_services.user_create(username="carol", password=PASSWORD, first_name="Carol")
    project = project_services.project_create(user=alice, name="E2E", slug="e2e")
    for user in (bob, carol):
        project_services.invitation_create(project=project, username=user.username, by=alice)
        project_services.invitation_accept(invitation=project.invitations.get(user=user), user=user)
    return {"alice": alice, "bob": bob, "carol": carol, "project": project}


def test_alice_and_bob_talk_in_a_dm(live_server_url, world, browser, artifacts):
    expect = _expect()
    base = live_server_url
    _, alice = log_in(browser, base, "alice", artifacts)
    _, bob = log_in(browser, base, "bob", artifacts)
    open_room(bob, base, "general")
    open_room(alice, base, "general")

    # Alice starts the conversation from the sidebar and lands on its page, titled by Bob's name.
    alice.click("#room-nav details.dm-new summary")
    alice.fill("#dm-nav-form input[name=users]", "bob")
    alice.click("#dm-nav-form button[type=submit]")
    expect(alice.locator(".room-title h1")).to_have_text("@Bob")
    expect(alice.locator("#conn-status")).to_have_attribute("data-state", "online")
    # (The ORM cannot run while Playwright's loop owns the thread: the page says which room it is.)
    active = alice.locator("#dm-nav a.active")
    expect(active).to_have_count(1)
    dm_id, dm_slug = int(active.get_attribute("data-room-id")), active.get_attribute("href").split("/")[-2]
    assert dm_slug.startswith("dm-") and alice.url == f"{base}/p/e2e/r/{dm_slug}/"
    assert alice.locator("button", has_text="Add member").count() == 0

    # Bob finds it in his sidebar under Direct messages, named after Alice, and opens it.
    bob.reload()
    bob_link = bob.locator(f'#dm-nav a[data-room-id="{dm_id}"]')
    expect(bob_link.locator(".room-name")).to_have_text("Alice")
    bob_link.click()
    expect(bob.locator("#conn-status")).to_have_attribute("data-state", "online")
    expect(bob.locator(".room-title h1")).to_have_text("@Alice")

    # Live both ways.
    send(alice, "hi bob, just us")
    expect(message(bob, "hi bob, just us")).to_have_count(1)
    send(bob, "hi alice")
    expect(message(alice, "hi alice")).to_have_count(1)

    # Bob in another room: Alice's next DM bumps its sidebar badge live (from what the page
    # rendered: his read marker may not have reached the server before he left the DM).
    open_room(bob, base, "general")
    badge = bob.locator(f'#room-nav a[data-room-id="{dm_id}"] .badge')
    rendered = int(badge.get_attribute("data-unread") or 0)
    send(alice, "are you there?")
    expect(message(alice, "are you there?")).to_have_count(1)
    expect(badge).to_have_text(str(rendered + 1))
    expect(badge).to_be_visible()

    # Carol, in the project but not in the DM, neither lists nor opens it.
    _, carol = log_in(browser, base, "carol", artifacts)
    open_room(carol, base, "general")
    expect(carol.locator("#dm-nav .nav-empty")).to_have_text("No direct messages yet.")
    response = carol.goto(f"{base}/p/e2e/r/{dm_slug}/")
    assert response is not None and response.status == 404
