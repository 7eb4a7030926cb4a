"""An owner makes an invite link in one browser; someone logged out opens it in another, logs in and joins."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections

from chat.services import accounts as account_services
from projects import services as project_services
from projects.models import InviteLink, Membership
from tests.conftest import PASSWORD
from tests.e2e.test_browser_chat import _expect, log_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(live_server_url) -> dict[str, Any]:
    """alice owns project "e2e"; carol has an account and is in no project."""
    alice = account_services.user_create(username="alice", password=PASSWORD, first_name="Alice")
    carol = account_services.user_create(username="carol", password=PASSWORD, first_name="Carol")
    project = project_services.project_create(user=alice, name="E2E", slug="e2e")
    return {"alice": alice, "carol": carol, "project": project}


def test_an_invite_link_brings_someone_into_the_project(live_server_url, world, browser, artifacts):
    expect = _expect()
    base = live_server_url
    _, alice = log_in(browser, base, "alice", artifacts)
    alice.goto(f"{base}/p/e2e/")
    form = alice.locator("#invite-link-form")
    form.locator("select[name=role]").select_option("member")
    form.locator("input[name=max_uses]").fill("1")
    form.locator("select[name=expires_in_hours]").select_option("24")
    form.locator("button[type=submit]").click()
    url_input = alice.locator("#invite-link-url")
    expect(url_input).to_be_visible()
    url = url_input.input_value()
    assert url.startswith(f"{base}/join/")
    # The copy button's script loads under the page's CSP and runs.
    copy = alice.locator("button[data-copy-from=invite-link-url]")
    copy.click()
    expect(copy).to_have_text("Copied")
    expect(alice.locator("#invite-link-list li[data-link-id]")).to_have_count(1)

    # Carol, logged out, opens the link: log in first, then back on the join page.
    carol_context = browser.new_context()
    carol = artifacts.watch("carol", carol_context.new_page())
    carol.goto(url)
    carol.wait_for_url(f"{base}/login/?next=**")
    carol.fill("#id_username", "carol")
    carol.fill("#id_password", PASSWORD)
    carol.click("form.stack-form button[type=submit]")
    carol.wait_for_url(url)
    expect(carol.locator("#join-card h1")).to_have_text("Join E2E")
    carol.locator("#join-form button[type=submit]").click()
    carol.wait_for_url(f"{base}/p/e2e/")
    expect(carol.locator(".flash")).to_contain_text("You joined E2E.")
    expect(carol.locator("#room-table")).to_contain_text("general")

    # The link was for one person: alice's list no longer shows it, and it counts one use.
    alice.goto(f"{base}/p/e2e/")
    expect(alice.locator("#invite-link-list li[data-link-id]")).to_have_count(0)
    expect(alice.locator("#member-list")).to_contain_text("@carol")
    carol_context.close()
    uses, role = _in_thread(
        lambda: (
            list(InviteLink.objects.values_list("uses", flat=True)),
            Membership.objects.get(project=world["project"], user=world["carol"]).role,
        )
    )
    assert (uses, role) == ([1], "member")


def _in_thread(call: Any) -> Any:
    """Run ``call`` on a thread of its own: the ORM refuses the thread Playwright's event loop runs on."""

    def run() -> Any:
        try:
            return call()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()
