"""Invite links on the pages: the project page's card, and the join page."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from projects import services
from projects.models import InviteLink, Membership
from tests.conftest import PASSWORD

CREATE = "/p/world/invite-links/"
URL_INPUT = re.compile(r'id="invite-link-url" value="([^"]+)"')


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def join_url(raw: str) -> str:
    return reverse("invite-link-join", kwargs={"token": raw})


def make_link(chat_world, **kwargs):
    return services.invite_link_create(project=chat_world["project"], by=chat_world["owner"], **kwargs)


def test_admins_see_the_card_and_members_do_not(chat_world):
    owner_page = client_for(chat_world["owner"]).get("/p/world/").content.decode()
    assert 'id="invite-link-form"' in owner_page and '<option value="admin"' in owner_page.split('id="invite-link-form"')[1]
    admin_page = client_for(chat_world["admin"]).get("/p/world/").content.decode()
    # Admins make member links only.
    assert 'id="invite-link-form"' in admin_page
    assert '<option value="admin"' not in admin_page.split('id="invite-link-form"')[1].split("</form>")[0]
    member_page = client_for(chat_world["member"]).get("/p/world/").content.decode()
    assert "invite-link" not in member_page


def test_making_a_link_shows_it_once_with_a_copy_button(chat_world):
    client = client_for(chat_world["owner"])
    response = client.post(CREATE, {"role": "admin", "max_uses": "3", "expires_in_hours": "24"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    url = URL_INPUT.search(html).group(1)
    raw = url.rsplit("/", 2)[-2]
    link = InviteLink.objects.get()
    assert url == f"http://testserver{join_url(raw)}" and link.token_hash == InviteLink.hash_token(raw)
    assert (link.role, link.max_uses) == ("admin", 3)
    assert timezone.now() + timedelta(hours=23) < link.expires_at <= timezone.now() + timedelta(hours=24)
    assert 'data-copy-from="invite-link-url"' in html
    assert '<script type="module" src="/static/projects/invite_links.js">' in html
    # Listed, without its URL, from now on.
    again = client.get("/p/world/").content.decode()
    assert f'data-link-id="{link.id}"' in again and raw not in again and "0 of 3 used" in again


def test_the_form_defaults_to_a_week_and_never_is_a_choice(chat_world):
    client = client_for(chat_world["owner"])
    client.post(CREATE, {"role": "member", "max_uses": "", "expires_in_hours": "168"})
    client.post(CREATE, {"role": "member", "max_uses": "", "expires_in_hours": ""})
    week, never = InviteLink.objects.order_by("id")
    assert week.expires_at > timezone.now() + timedelta(days=6, hours=23) and week.max_uses is None
    assert never.expires_at is None


def test_bad_form_input_comes_back_with_errors(chat_world):
    admin = client_for(chat_world["admin"])
    response = admin.post(CREATE, {"role": "admin", "max_uses": "0", "expires_in_hours": "99"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("errorlist") >= 3
    assert not InviteLink.objects.exists()


def test_making_links_is_rate_limited_on_the_page(chat_world, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "invite_link": "1/3600"}
    client = client_for(chat_world["owner"])
    assert client.post(CREATE, {"role": "member", "expires_in_hours": "1"}).status_code == 200
    limited = client.post(CREATE, {"role": "member", "expires_in_hours": "1"})
    assert limited.status_code == 429 and "Too many invite links" in limited.content.decode()
    assert InviteLink.objects.count() == 1


def test_members_get_403_and_outsiders_404(chat_world):
    assert client_for(chat_world["member"]).post(CREATE, {"role": "member"}).status_code == 403
    assert client_for(chat_world["outsider"]).post(CREATE, {"role": "member"}).status_code == 404
    link, _ = make_link(chat_world)
    revoke = f"/p/world/invite-links/{link.id}/revoke/"
    assert client_for(chat_world["member"]).post(revoke).status_code == 403
    assert client_for(chat_world["outsider"]).post(revoke).status_code == 404
    assert not InviteLink.objects.exclude(pk=link.pk).exists() and InviteLink.objects.get().revoked_at is None


def test_revoking_takes_it_off_the_list(chat_world, make_project):
    link, raw = make_link(chat_world)
    client = client_for(chat_world["admin"])
    response = client.post(f"/p/world/invite-links/{link.id}/revoke/")
    assert response.status_code == 302 and response["Location"] == "/p/world/"
    page = client.get("/p/world/").content.decode()
    assert "revoked" in page and f'data-link-id="{link.id}"' not in page
    assert InviteLink.objects.get().revoked_at is not None
    other = make_project(chat_world["owner"], name="Elsewhere")
    foreign, _ = services.invite_link_create(project=other, by=chat_world["owner"])
    assert client_for(chat_world["owner"]).post(f"/p/world/invite-links/{foreign.id}/revoke/").status_code == 404
    assert InviteLink.objects.get(pk=foreign.pk).revoked_at is None


def test_the_join_page_shows_the_project_and_get_changes_nothing(chat_world):
    _, raw = make_link(chat_world, max_uses=1)
    client = client_for(chat_world["outsider"])
    for _ in range(3):
        response = client.get(join_url(raw))
        assert response.status_code == 200
    html = response.content.decode()
    assert "Join World" in html and f'action="{join_url(raw)}"' in html
    assert "no-store" in response["Cache-Control"]
    assert InviteLink.objects.get().uses == 0
    assert not Membership.objects.filter(project=chat_world["project"], user=chat_world["outsider"]).exists()


def test_posting_joins_and_lands_in_the_project(chat_world):
    _, raw = make_link(chat_world, max_uses=1)
    client = client_for(chat_world["outsider"])
    response = client.post(join_url(raw))
    assert response.status_code == 302 and response["Location"] == "/p/world/"
    landed = client.get("/p/world/")
    assert landed.status_code == 200 and "You joined World." in landed.content.decode()
    assert Membership.objects.get(project=chat_world["project"], user=chat_world["outsider"]).role == "member"
    # Again: a member now, sent to the project, no second use counted (though the link is used up).
    assert "already a member" in client.get(join_url(raw)).content.decode()
    again = client.post(join_url(raw))
    assert again.status_code == 302 and again["Location"] == "/p/world/"
    assert InviteLink.objects.get().uses == 1


def test_ended_and_unknown_links_get_a_clear_page(chat_world, make_user):
    client = client_for(chat_world["outsider"])
    revoked, revoked_raw = make_link(chat_world)
    services.invite_link_revoke(link=revoked, by=chat_world["owner"])
    expired, expired_raw = make_link(chat_world, expires_at=timezone.now() + timedelta(hours=1))
    InviteLink.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    _, used_raw = make_link(chat_world, max_uses=1)
    client_for(make_user()).post(join_url(used_raw))
    for raw, words in ((revoked_raw, "revoked"), (expired_raw, "expired"), (used_raw, "used as many times")):
        for response in (client.get(join_url(raw)), client.post(join_url(raw))):
            assert response.status_code == 410
            html = response.content.decode()
            assert words in html and 'id="join-form"' not in html and "World" not in html
    for response in (client.get(join_url("no-such-token")), client.post(join_url("no-such-token"))):
        assert response.status_code == 404 and "does not exist" in response.content.decode()
    assert not Membership.objects.filter(project=chat_world["project"], user=chat_world["outsider"]).exists()


def test_a_logged_out_visitor_logs_in_and_comes_back_to_the_join_page(chat_world):
    _, raw = make_link(chat_world)
    client = Client()
    response = client.get(join_url(raw))
    assert response.status_code == 302
    login = f"/login/?next={quote(join_url(raw))}"
    assert response["Location"] == login
    assert client.post(join_url(raw)).status_code == 302  # a POST too: nothing happens
    page = client.get(login).content.decode()
    assert f'name="next" value="{join_url(raw)}"' in page
    logged_in = client.post("/login/", {"username": "outsider", "password": PASSWORD, "next": join_url(raw)})
    assert logged_in.status_code == 302 and logged_in["Location"] == join_url(raw)
    assert client.post(join_url(raw))["Location"] == "/p/world/"
    assert Membership.objects.filter(project=chat_world["project"], user=chat_world["outsider"]).exists()


def test_a_new_visitor_signs_up_and_comes_back_to_the_join_page(chat_world):
    _, raw = make_link(chat_world)
    client = Client()
    login = client.get(client.get(join_url(raw))["Location"]).content.decode()
    signup = re.search(r'href="(/signup/[^"]*)">Create an account', login).group(1)
    assert signup == f"/signup/?next={quote(join_url(raw), safe='')}"
    form = client.get(signup).content.decode()
    assert f'name="next" value="{join_url(raw)}"' in form
    password = "a-Long-pass-42"
    response = client.post(
        "/signup/", {"username": "newcomer", "password1": password, "password2": password, "next": join_url(raw)}
    )
    assert response.status_code == 302 and response["Location"] == join_url(raw)
    assert client.post(join_url(raw))["Location"] == "/p/world/"
    assert Membership.objects.filter(project=chat_world["project"], user__username="newcomer").exists()


def test_sign_up_ignores_a_next_to_another_site(chat_world):
    client = Client()
    password = "a-Long-pass-42"
    response = client.post(
        "/signup/",
        {"username": "newcomer", "password1": password, "password2": password, "next": "https://evil.example/"},
    )
    assert response.status_code == 302 and response["Location"] == "/"
