"""The projects, members and invitations endpoints of /api/v1/."""

from __future__ import annotations

import threading

import orjson
import pytest
from django.db import connections, transaction

from chat.models import Room
from projects import services as project_services
from projects.models import Invitation, Membership, Project
from tests.waiting import wait_until

API = "/api/v1"


def post_json(client, path: str, data):
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    return client.post(f"{API}{path}", data=body, content_type="application/json")


def walk(client, path: str, *, limit: int, between=None) -> tuple[list[dict], int]:
    """Every item of a cursor-paginated list, and the number of pages fetched."""
    items, cursor, pages = [], None, 0
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(f"{API}{path}{query}")
        assert response.status_code == 200
        items += response.json()["items"]
        pages += 1
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items, pages
        if between:
            between()


# --- GET /projects -----------------------------------------------------------


def test_project_list_shows_own_projects_with_role(chat_world, api_client, make_project):
    member = chat_world["member"]
    make_project(member, name="Side Quest")
    make_project(name="Not Mine")
    response = api_client(member).get(f"{API}/projects")
    assert response.status_code == 200
    data = response.json()
    assert data["next_cursor"] is None
    assert [(p["name"], p["role"]) for p in data["items"]] == [("World", "member"), ("Side Quest", "owner")]
    world = data["items"][0]
    assert set(world) == {"slug", "name", "description", "archived", "role", "created_at"}
    assert world["slug"] == "world" and world["archived"] is False


def test_project_list_empty_for_outsider_and_staff(chat_world, api_client):
    for who in ("outsider", "staff"):
        assert api_client(chat_world[who]).get(f"{API}/projects").json() == {"items": [], "next_cursor": None}


def test_project_list_pages_without_skips_or_repeats(make_user, make_project, api_client):
    user = make_user()
    projects = [make_project(user, name=f"P{i}") for i in range(5)]
    client = api_client(user)

    def rename_one():
        # A rename between two fetches must not move a project across the page boundary.
        project = Project.objects.get(pk=projects[-1].pk)
        project.name = "AAA first by name"
        project.save()

    items, pages = walk(client, "/projects", limit=2, between=rename_one)
    assert [p["slug"] for p in items] == [p.slug for p in projects]
    assert pages == 3


def test_project_list_bad_cursor_and_limit(make_user, api_client):
    client = api_client(make_user())
    response = client.get(f"{API}/projects?cursor=bm9wZQ")
    assert response.status_code == 400 and response.json()["code"] == "invalid_cursor"
    assert client.get(f"{API}/projects?limit=0").status_code == 422


# --- POST /projects ----------------------------------------------------------


def test_project_create(make_user, api_client):
    user = make_user()
    response = post_json(api_client(user), "/projects", {"name": "Launch Pad", "description": "rockets"})
    assert response.status_code == 201
    data = response.json()
    assert data["slug"] == "launch-pad" and data["role"] == "owner" and data["description"] == "rockets"
    project = Project.objects.get(slug="launch-pad")
    assert Membership.objects.get(project=project, user=user).role == "owner"
    assert Room.objects.filter(project=project, slug="general").exists()


def test_project_create_with_explicit_slug(make_user, api_client):
    response = post_json(api_client(make_user()), "/projects", {"name": "Thing", "slug": "My Slug"})
    assert response.status_code == 201
    assert response.json()["slug"] == "my-slug"


@pytest.mark.parametrize(
    "payload,status,code",
    [
        ({}, 422, "validation_error"),
        ({"name": 12}, 422, "validation_error"),
        ({"name": "ok", "description": ["x"]}, 422, "validation_error"),
        ({"name": "  "}, 400, "invalid"),
        ({"name": "x" * 101}, 400, "invalid"),
        ({"name": "ok", "description": "d" * 2001}, 400, "invalid"),
        ({"name": "!!!"}, 400, "invalid"),
        ({"name": "nul\x00"}, 422, "validation_error"),
        (b"{\"name\":", 400, "malformed_body"),
        (b"", 422, "validation_error"),
    ],
)
def test_project_create_bad_input(make_user, api_client, payload, status, code):
    response = post_json(api_client(make_user()), "/projects", payload)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert not Project.objects.exists()


def test_project_create_taken_slug_is_409(chat_world, api_client):
    response = post_json(api_client(chat_world["outsider"]), "/projects", {"name": "World"})
    assert response.status_code == 409
    assert response.json()["code"] == "slug_taken"


# --- GET /projects/{slug} ----------------------------------------------------


def test_project_detail_carries_the_callers_role(chat_world, api_client):
    for who, role in (("owner", "owner"), ("admin", "admin"), ("member", "member")):
        response = api_client(chat_world[who]).get(f"{API}/projects/world")
        assert response.status_code == 200
        assert response.json()["role"] == role
        assert response.json()["name"] == "World"


@pytest.mark.parametrize(
    "who,slug", [("outsider", "world"), ("staff", "world"), ("member", "no-such-project"), ("member", "WORLD")]
)
def test_project_detail_not_found(chat_world, api_client, who, slug):
    response = api_client(chat_world[who]).get(f"{API}/projects/{slug}")
    assert response.status_code == 404
    assert response.json() == {"detail": "Project not found.", "code": "not_found"}


def test_project_slug_postgres_cannot_hold_is_400_not_500(chat_world, api_client):
    client = api_client(chat_world["member"])
    for path in ("/projects/%00", "/projects/a%00b/rooms", "/projects/%00/members"):
        response = client.get(f"{API}{path}")
        assert response.status_code == 400
        assert response.json()["code"] == "invalid"


# --- Members -----------------------------------------------------------------


def test_member_list(chat_world, api_client):
    response = api_client(chat_world["member"]).get(f"{API}/projects/world/members")
    assert response.status_code == 200
    data = response.json()
    assert [(m["username"], m["role"]) for m in data["items"]] == [
        ("admin1", "admin"),
        ("insider", "member"),
        ("member", "member"),
        ("owner", "owner"),
    ]
    assert data["items"][0]["id"] == chat_world["admin"].id
    assert data["items"][0]["display_name"] == "admin1"


def test_member_list_pages_by_username(chat_world, api_client, make_user):
    project = chat_world["project"]
    for name in ("zed", "bea", "carl"):
        Membership.objects.create(project=project, user=make_user(name))
    items, pages = walk(api_client(chat_world["owner"]), "/projects/world/members", limit=3)
    usernames = [m["username"] for m in items]
    assert usernames == ["admin1", "bea", "carl", "insider", "member", "owner", "zed"]
    assert pages == 3


def test_member_list_of_foreign_project_is_404(chat_world, api_client):
    assert api_client(chat_world["outsider"]).get(f"{API}/projects/world/members").status_code == 404


def test_member_list_query_count_does_not_grow(chat_world, api_client, make_user, django_assert_num_queries):
    project = chat_world["project"]
    for _ in range(10):
        Membership.objects.create(project=project, user=make_user())
    client = api_client(chat_world["member"])
    # The page (users joined in); token, project and membership are cached
    # after the first request.
    client.get(f"{API}/projects/world/members?limit=1")
    with django_assert_num_queries(1):
        small = client.get(f"{API}/projects/world/members?limit=1")
    with django_assert_num_queries(1):
        large = client.get(f"{API}/projects/world/members?limit=100")
    assert len(small.json()["items"]) == 1 and len(large.json()["items"]) == 14


# --- Invitations ---------------------------------------------------------------

INVITED = b'{"detail":"If that user exists and is not a member, they have been invited.","code":"invited"}'


def invite(client, username: str, role: str | None = None, *, slug: str = "world"):
    body = {"username": username, **({"role": role} if role else {})}
    return post_json(client, f"/projects/{slug}/invitations", body)


def test_invite_answer_is_byte_for_byte_the_same_whatever_the_username(chat_world, api_client, make_user):
    owner = api_client(chat_world["owner"])
    invite(owner, "staff")  # already invited below
    sleeper = make_user("sleeper")
    sleeper.is_active = False
    sleeper.save()
    answers = {
        username: invite(owner, username)
        for username in ("outsider", "ghost", "member", "staff", "owner", "sleeper", "OUTSIDER2")
    }
    for username, response in answers.items():
        assert response.status_code == 202, username
        assert response.content == INVITED, username
        assert response["Content-Type"] == answers["outsider"]["Content-Type"]
    invited = set(Invitation.objects.values_list("user__username", flat=True))
    assert invited == {"outsider", "staff"}


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_invited_user_accepts_and_gets_the_project(chat_world, api_client, who):
    response = invite(api_client(chat_world[who]), "outsider", "admin")
    assert response.status_code == 202
    outsider = api_client(chat_world["outsider"])
    assert outsider.get(f"{API}/projects/world").status_code == 404  # not a member before accepting
    (item,) = outsider.get(f"{API}/invitations").json()["items"]
    assert item["project"] == {"slug": "world", "name": "World"} and item["role"] == "admin"
    assert item["invited_by"]["username"] == chat_world[who].username

    accepted = outsider.post(f"{API}/invitations/{item['id']}/accept")
    assert accepted.status_code == 201
    assert accepted.json() == outsider.get(f"{API}/projects/world").json()
    assert accepted.json()["role"] == "admin"
    assert outsider.get(f"{API}/invitations").json() == {"items": [], "next_cursor": None}
    # Accepted: the invitation is gone, a repeat is a 404.
    again = outsider.post(f"{API}/invitations/{item['id']}/accept")
    assert again.status_code == 404 and again.json() == {"detail": "Invitation not found.", "code": "not_found"}


def test_invite_default_role_is_member(chat_world, api_client):
    invite(api_client(chat_world["owner"]), "outsider")
    assert Invitation.objects.get().role == "member"


def test_invite_by_non_admin_is_403_and_by_outsider_404(chat_world, api_client):
    response = invite(api_client(chat_world["member"]), "outsider")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    outsider = api_client(chat_world["outsider"])
    hidden = invite(outsider, "staff")
    missing = invite(outsider, "staff", slug="no-such-project")
    assert hidden.status_code == 404 and (hidden.status_code, hidden.content) == (missing.status_code, missing.content)
    assert not Invitation.objects.exists()


def test_invite_bad_input(chat_world, api_client):
    owner = api_client(chat_world["owner"])
    bad_role = invite(owner, "outsider", "owner")
    assert bad_role.status_code == 400 and bad_role.json()["code"] == "invalid"
    assert post_json(owner, "/projects/world/invitations", {}).status_code == 422
    assert post_json(owner, "/projects/world/invitations", {"username": ["outsider"]}).status_code == 422
    assert post_json(owner, "/projects/world/invitations", {"username": "nul\x00"}).status_code == 422
    assert post_json(owner, "/projects/world/invitations", b"nope").status_code == 400
    assert not Invitation.objects.exists()


def test_invites_are_rate_limited(chat_world, api_client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "invite": "2/3600"}
    owner = api_client(chat_world["owner"])
    assert invite(owner, "ghost").status_code == 202
    assert invite(owner, "outsider").status_code == 202
    limited = invite(owner, "staff")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert int(limited["Retry-After"]) >= 1
    assert not Invitation.objects.filter(user=chat_world["staff"]).exists()


def test_the_old_add_member_endpoint_is_gone(chat_world, api_client):
    response = post_json(api_client(chat_world["owner"]), "/projects/world/members", {"username": "outsider"})
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    assert not Membership.objects.filter(user=chat_world["outsider"]).exists()


def test_invitation_list_pages_and_fields(chat_world, api_client, make_project, django_assert_num_queries):
    outsider = chat_world["outsider"]
    projects = [make_project(name=f"Team {i}") for i in range(5)]
    for project in projects:
        owner = project.memberships.get().user
        project_services.invitation_create(project=project, username="outsider", by=owner)
    project_services.invitation_create(project=chat_world["project"], username="staff", by=chat_world["owner"])
    client = api_client(outsider)
    items, pages = walk(client, "/invitations", limit=2)
    assert [i["project"]["slug"] for i in items] == [p.slug for p in projects]
    assert pages == 3
    assert set(items[0]) == {"id", "project", "role", "invited_by", "created_at"}
    picked = client.get(f"{API}/invitations?fields=id,project").json()["items"]
    assert [set(i) for i in picked] == [{"id", "project"}] * 5
    assert client.get(f"{API}/invitations?fields=email").json()["code"] == "invalid_fields"
    # One query for the page, however long it is (the token is cached after the first request).
    with django_assert_num_queries(1):
        small = client.get(f"{API}/invitations?limit=1")
    with django_assert_num_queries(1):
        large = client.get(f"{API}/invitations?limit=100")
    assert len(small.json()["items"]) == 1 and len(large.json()["items"]) == 5


def test_invitation_of_a_deleted_inviter_shows_no_inviter(chat_world, api_client, make_user):
    deputy = make_user("deputy")
    Membership.objects.create(project=chat_world["project"], user=deputy, role=Membership.Role.ADMIN)
    project_services.invitation_create(project=chat_world["project"], username="outsider", by=deputy)
    deputy.delete()
    (item,) = api_client(chat_world["outsider"]).get(f"{API}/invitations").json()["items"]
    assert item["invited_by"] is None


def test_decline(chat_world, api_client):
    invite(api_client(chat_world["owner"]), "outsider")
    invitation = Invitation.objects.get()
    outsider = api_client(chat_world["outsider"])
    response = outsider.post(f"{API}/invitations/{invitation.id}/decline")
    assert response.status_code == 204 and response.content == b""
    assert not Invitation.objects.exists()
    assert outsider.get(f"{API}/projects/world").status_code == 404
    assert outsider.post(f"{API}/invitations/{invitation.id}/decline").status_code == 404


@pytest.mark.parametrize("action", ["accept", "decline"])
@pytest.mark.parametrize("who", ["owner", "member", "staff"])
def test_someone_elses_invitation_is_404_like_a_missing_one(chat_world, api_client, action, who):
    invite(api_client(chat_world["owner"]), "outsider")
    invitation = Invitation.objects.get()
    client = api_client(chat_world[who])
    theirs = client.post(f"{API}/invitations/{invitation.id}/{action}")
    missing = client.post(f"{API}/invitations/{invitation.id + 1000}/{action}")
    assert theirs.status_code == 404
    assert (theirs.status_code, theirs.content) == (missing.status_code, missing.content)
    assert Invitation.objects.filter(pk=invitation.pk).exists()
    assert not Membership.objects.filter(user=chat_world["outsider"]).exists()


# --- Removing members and leaving ------------------------------------------------


def test_admin_removes_a_member(chat_world, api_client):
    member = chat_world["member"]
    response = api_client(chat_world["admin"]).delete(f"{API}/projects/world/members/{member.id}")
    assert response.status_code == 204 and response.content == b""
    assert not Membership.objects.filter(user=member).exists()
    assert api_client(member).get(f"{API}/projects/world").status_code == 404


def test_remove_rules(chat_world, api_client, make_user):
    owner, admin, member = (chat_world[w] for w in ("owner", "admin", "member"))
    as_member = api_client(member).delete(f"{API}/projects/world/members/{chat_world['insider'].id}")
    assert as_member.status_code == 403 and as_member.json()["code"] == "forbidden"
    as_admin = api_client(admin).delete(f"{API}/projects/world/members/{owner.id}")
    assert as_admin.status_code == 403 and as_admin.json()["detail"] == "Only an owner can remove an owner."
    # A user outside the project answers like an id nobody has.
    client = api_client(owner)
    outside = client.delete(f"{API}/projects/world/members/{chat_world['outsider'].id}")
    nobody = client.delete(f"{API}/projects/world/members/987654321")
    assert outside.status_code == 404 and (outside.status_code, outside.content) == (nobody.status_code, nobody.content)
    # An outsider learns nothing about the project.
    hidden = api_client(chat_world["outsider"]).delete(f"{API}/projects/world/members/{member.id}")
    missing = api_client(chat_world["outsider"]).delete(f"{API}/projects/no-such-project/members/{member.id}")
    assert hidden.status_code == 404 and hidden.content == missing.content
    assert Membership.objects.filter(project=chat_world["project"]).count() == 4


def test_deleting_ones_own_membership_is_leaving(chat_world, api_client):
    member = chat_world["member"]
    assert api_client(member).delete(f"{API}/projects/world/members/{member.id}").status_code == 204
    assert not Membership.objects.filter(user=member).exists()
    owner = chat_world["owner"]
    last = api_client(owner).delete(f"{API}/projects/world/members/{owner.id}")
    assert last.status_code == 409 and last.json()["code"] == "last_owner"


@pytest.mark.parametrize("who", ["member", "admin"])
def test_leave(chat_world, api_client, who):
    client = api_client(chat_world[who])
    response = client.post(f"{API}/projects/world/leave")
    assert response.status_code == 204 and response.content == b""
    assert client.get(f"{API}/projects/world").status_code == 404
    assert client.post(f"{API}/projects/world/leave").status_code == 404


def test_last_owner_cannot_leave(chat_world, api_client):
    response = api_client(chat_world["owner"]).post(f"{API}/projects/world/leave")
    assert response.status_code == 409
    assert response.json() == {"detail": "The last owner cannot leave the project.", "code": "last_owner"}
    assert Membership.objects.filter(user=chat_world["owner"], role="owner").exists()


def test_outsider_leaving_is_404_like_a_missing_project(chat_world, api_client):
    client = api_client(chat_world["outsider"])
    hidden = client.post(f"{API}/projects/world/leave")
    missing = client.post(f"{API}/projects/no-such-project/leave")
    assert hidden.status_code == 404 and hidden.content == missing.content


# --- Races -------------------------------------------------------------------------


def _wait_for_a_lock_wait() -> None:
    """Wait until another connection of this test database waits for a row lock."""
    with connections["default"].cursor() as cursor:

        def lock_waiters() -> int:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0]

        wait_until(lock_waiters, timeout=30, interval=0.02, message="the second request never waited for the lock")


def _in_thread(call) -> tuple[threading.Thread, list]:
    result: list = []

    def run():
        try:
            result.append(call())
        except BaseException as exc:  # pragma: no cover - surfaced by the caller
            result.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.django_db(transaction=True)
def test_a_double_accept_joins_once_and_both_answer_201(chat_world, api_client):
    """The second accept arrives while the first holds the invitation: it waits, then answers as the first did."""
    outsider = chat_world["outsider"]
    project_services.invitation_create(project=chat_world["project"], username="outsider", by=chat_world["owner"])
    invitation = Invitation.objects.get()
    client = api_client(outsider)
    with transaction.atomic():
        first = project_services.invitation_accept(invitation=invitation, user=outsider)
        thread, result = _in_thread(lambda: client.post(f"{API}/invitations/{invitation.id}/accept"))
        _wait_for_a_lock_wait()
    thread.join()
    (second,) = result
    assert second.status_code == 201, second.content
    assert second.json()["slug"] == "world" and second.json()["role"] == first.role == "member"
    assert Membership.objects.filter(project=chat_world["project"], user=outsider).count() == 1
    assert not Invitation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_owners_leaving_at_once_leave_one_owner(chat_world, api_client, make_user):
    project, owner = chat_world["project"], chat_world["owner"]
    second = make_user("second-owner")
    Membership.objects.create(project=project, user=second, role=Membership.Role.OWNER)
    client = api_client(second)
    with transaction.atomic():
        project_services.membership_remove(project=project, user=owner, by=owner)
        thread, result = _in_thread(lambda: client.post(f"{API}/projects/world/leave"))
        _wait_for_a_lock_wait()
    thread.join()
    (response,) = result
    assert response.status_code == 409 and response.json()["code"] == "last_owner"
    assert list(Membership.objects.filter(project=project, role="owner").values_list("user", flat=True)) == [second.id]
