"""The invite-link endpoints of /api/v1/."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from chat.models import Room
from projects import services
from projects.models import InviteLink, Membership
from tests.projects.test_api import API, post_json, walk

LINKS = f"{API}/projects/world/invite-links"


def create(client, payload=None):
    return post_json(client, "/projects/world/invite-links", payload or {})


def join(client, token):
    return post_json(client, "/invite-links/join", {"token": token})


def test_create_returns_the_url_and_token_once(chat_world, api_client):
    before = timezone.now()
    response = create(api_client(chat_world["owner"]), {"role": "admin", "max_uses": 5, "expires_in_hours": 24})
    assert response.status_code == 201, response.content
    data = response.json()
    assert set(data) == {
        "id", "role", "max_uses", "uses", "expires_at", "revoked_at", "state", "created_by", "created_at", "url", "token",
    }  # fmt: skip
    assert data["url"] == f"http://testserver/join/{data['token']}/"
    assert (data["role"], data["max_uses"], data["uses"], data["state"]) == ("admin", 5, 0, "active")
    assert data["created_by"]["username"] == "owner" and data["revoked_at"] is None
    link = InviteLink.objects.get()
    assert link.token_hash == InviteLink.hash_token(data["token"])
    assert before + timedelta(hours=24) <= link.expires_at <= timezone.now() + timedelta(hours=24)


def test_create_defaults_to_a_member_link_without_limits(chat_world, api_client):
    data = create(api_client(chat_world["admin"])).json()
    assert (data["role"], data["max_uses"], data["expires_at"]) == ("member", None, None)


@pytest.mark.parametrize(
    "payload,status,code",
    [
        ({"role": "owner"}, 400, "invalid"),
        ({"role": 1}, 422, "validation_error"),
        ({"max_uses": 0}, 422, "validation_error"),
        ({"max_uses": "5"}, 422, "validation_error"),
        ({"max_uses": services.INVITE_LINK_MAX_USES + 1}, 422, "validation_error"),
        ({"expires_in_hours": 0}, 422, "validation_error"),
        ({"expires_in_hours": 24 * 366}, 422, "validation_error"),
        ({"expires_in_hours": 1.5}, 422, "validation_error"),
    ],
)
def test_create_bad_input(chat_world, api_client, payload, status, code):
    response = create(api_client(chat_world["owner"]), payload)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert not InviteLink.objects.exists()


def test_who_may_create(chat_world, api_client):
    refused = create(api_client(chat_world["admin"]), {"role": "admin"})
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    member = create(api_client(chat_world["member"]))
    assert member.status_code == 403 and member.json()["code"] == "forbidden"
    for who in ("outsider", "staff"):
        hidden = create(api_client(chat_world[who]))
        missing = post_json(api_client(chat_world[who]), "/projects/no-such-project/invite-links", {})
        assert hidden.status_code == 404 and hidden.content == missing.content
    assert create(api_client(None)).status_code == 401
    assert not InviteLink.objects.exists()


def test_create_is_rate_limited(chat_world, api_client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "invite_link": "2/3600"}
    client = api_client(chat_world["owner"])
    assert [create(client).status_code for _ in range(2)] == [201, 201]
    limited = create(client)
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert int(limited["Retry-After"]) >= 1
    assert InviteLink.objects.count() == 2


def test_list_shows_every_link_with_its_state_and_never_a_token(chat_world, api_client, make_user):
    client = api_client(chat_world["owner"])
    tokens = [create(client, {"max_uses": 1}).json()["token"] for _ in range(3)]
    ids = list(InviteLink.objects.order_by("id").values_list("id", flat=True))
    assert join(api_client(make_user()), tokens[0]).status_code == 201
    client.delete(f"{LINKS}/{ids[1]}")
    InviteLink.objects.filter(pk=ids[2]).update(expires_at=timezone.now() - timedelta(minutes=1))
    live = create(client).json()
    response = api_client(chat_world["admin"]).get(LINKS)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(i["id"], i["state"], i["uses"]) for i in items] == [
        (live["id"], "active", 0), (ids[2], "expired", 0), (ids[1], "revoked", 0), (ids[0], "used_up", 1),
    ]  # fmt: skip
    assert "token" not in items[0] and "url" not in items[0]
    for token in tokens:
        assert token not in response.content.decode()
    assert set(items[0]) == set(live) - {"token", "url"}


def test_list_pages_newest_first_and_picks_fields(chat_world, api_client):
    client = api_client(chat_world["owner"])
    made = [create(client).json()["id"] for _ in range(5)]
    items, pages = walk(client, "/projects/world/invite-links", limit=2)
    assert [i["id"] for i in items] == made[::-1] and pages == 3
    picked = client.get(f"{LINKS}?fields=id,uses").json()["items"]
    assert all(set(i) == {"id", "uses"} for i in picked)


def test_list_and_revoke_need_a_project_admin(chat_world, api_client):
    link_id = create(api_client(chat_world["owner"])).json()["id"]
    member = api_client(chat_world["member"])
    for response in (member.get(LINKS), member.delete(f"{LINKS}/{link_id}")):
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
    outsider = api_client(chat_world["outsider"])
    for hidden, missing in (
        (outsider.get(LINKS), outsider.get(f"{API}/projects/nope/invite-links")),
        (outsider.delete(f"{LINKS}/{link_id}"), outsider.delete(f"{API}/projects/nope/invite-links/{link_id}")),
    ):
        assert hidden.status_code == 404 and hidden.content == missing.content
    assert InviteLink.objects.get().revoked_at is None


def test_revoke(chat_world, api_client, make_project):
    owner = api_client(chat_world["owner"])
    data = create(owner).json()
    admin = api_client(chat_world["admin"])
    assert admin.delete(f"{LINKS}/{data['id']}").status_code == 204
    assert admin.delete(f"{LINKS}/{data['id']}").status_code == 204  # harmless again
    gone = join(api_client(chat_world["outsider"]), data["token"])
    assert gone.status_code == 410 and gone.json()["code"] == "revoked"
    # Another project's link, and an id nobody has, through this project: the same 404.
    other = make_project(chat_world["owner"], name="Other")
    other_link, _ = services.invite_link_create(project=other, by=chat_world["owner"])
    foreign = owner.delete(f"{LINKS}/{other_link.id}")
    missing = owner.delete(f"{LINKS}/987654321")
    assert foreign.status_code == 404 and foreign.content == missing.content
    assert InviteLink.objects.get(pk=other_link.pk).revoked_at is None


def test_join_gives_the_project_and_repeating_is_200(chat_world, api_client):
    token = create(api_client(chat_world["owner"]), {"role": "admin", "max_uses": 1}).json()["token"]
    client = api_client(chat_world["outsider"])
    joined = join(client, token)
    assert joined.status_code == 201
    assert joined.json()["slug"] == "world" and joined.json()["role"] == "admin"
    again = join(client, token)  # the link is used up, but they are a member: their project again, no use
    assert again.status_code == 200 and again.json()["role"] == "admin"
    assert InviteLink.objects.get().uses == 1
    rooms = client.get(f"{API}/projects/world/rooms")
    assert rooms.status_code == 200
    assert "general" in {r["slug"] for r in rooms.json()["items"]}
    assert Room.objects.filter(project=chat_world["project"], slug="general").exists()


def test_a_member_joining_keeps_their_role(chat_world, api_client):
    token = create(api_client(chat_world["owner"]), {"role": "admin"}).json()["token"]
    response = join(api_client(chat_world["member"]), token)
    assert response.status_code == 200 and response.json()["role"] == "member"
    assert Membership.objects.get(project=chat_world["project"], user=chat_world["member"]).role == "member"


def test_join_errors(chat_world, api_client, make_user):
    owner = api_client(chat_world["owner"])
    outsider = api_client(chat_world["outsider"])
    missing = join(outsider, "not-a-real-token")
    assert missing.status_code == 404 and missing.json() == {"detail": "Invite link not found.", "code": "not_found"}
    used = create(owner, {"max_uses": 1}).json()["token"]
    assert join(api_client(make_user()), used).status_code == 201
    expired = create(owner, {"expires_in_hours": 1}).json()
    InviteLink.objects.filter(pk=expired["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    for token, code in ((used, "used_up"), (expired["token"], "expired")):
        response = join(outsider, token)
        assert response.status_code == 410 and response.json()["code"] == code
        assert response.json()["detail"]
    assert join(api_client(None), used).status_code == 401
    bad = post_json(outsider, "/invite-links/join", {"token": 5})
    assert bad.status_code == 422
    assert not Membership.objects.filter(project=chat_world["project"], user=chat_world["outsider"]).exists()


def test_the_endpoints_are_in_the_openapi_document(client):
    schema = orjson.loads(client.get(f"{API}/openapi.json").content)
    paths = schema["paths"]
    assert set(paths["/api/v1/projects/{slug}/invite-links"]) == {"get", "post"}
    assert set(paths["/api/v1/projects/{slug}/invite-links/{link_id}"]) == {"delete"}
    join_op = paths["/api/v1/invite-links/join"]["post"]
    assert {"200", "201", "404", "410"} <= set(join_op["responses"])
