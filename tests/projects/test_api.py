"""The projects and members endpoints of /api/v1/."""

from __future__ import annotations

import orjson
import pytest

from chat.models import Room
from projects.models import Membership, Project

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


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_member_add_by_admin(chat_world, api_client, who):
    client = api_client(chat_world[who])
    response = post_json(client, "/projects/world/members", {"username": "outsider", "role": "admin"})
    assert response.status_code == 201
    data = response.json()
    assert data["username"] == "outsider" and data["role"] == "admin" and data["id"] == chat_world["outsider"].id
    assert api_client(chat_world["outsider"]).get(f"{API}/projects/world").json()["role"] == "admin"


def test_member_add_default_role_is_member(chat_world, api_client):
    response = post_json(api_client(chat_world["owner"]), "/projects/world/members", {"username": "outsider"})
    assert response.status_code == 201
    assert response.json()["role"] == "member"


def test_member_add_by_non_admin_is_403(chat_world, api_client):
    response = post_json(api_client(chat_world["member"]), "/projects/world/members", {"username": "outsider"})
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert not Membership.objects.filter(user=chat_world["outsider"]).exists()


def test_member_add_errors(chat_world, api_client):
    owner = api_client(chat_world["owner"])
    unknown = post_json(owner, "/projects/world/members", {"username": "ghost"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "user_not_found"
    already = post_json(owner, "/projects/world/members", {"username": "member"})
    assert already.status_code == 409 and already.json()["code"] == "already_member"
    bad_role = post_json(owner, "/projects/world/members", {"username": "outsider", "role": "owner"})
    assert bad_role.status_code == 400
    assert post_json(owner, "/projects/world/members", {}).status_code == 422
    assert post_json(owner, "/projects/world/members", {"username": ["outsider"]}).status_code == 422
    assert post_json(owner, "/projects/world/members", b"nope").status_code == 400
    # A non-member cannot invite, nor learn the project exists.
    outsider = api_client(chat_world["outsider"])
    assert post_json(outsider, "/projects/world/members", {"username": "staff"}).status_code == 404
    assert not Membership.objects.filter(user__in=[chat_world["outsider"], chat_world["staff"]]).exists()

