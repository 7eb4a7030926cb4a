"""The project list and project pages, through django.test.Client against the real database."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

from chat import services as chat_services
from chat.models import Room
from projects.models import Membership, Project


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def project_url(project: Project) -> str:
    return reverse("project-detail", kwargs={"slug": project.slug})


def invite_url(project: Project) -> str:
    return reverse("project-invite", kwargs={"slug": project.slug})


def test_project_list_shows_only_my_projects(make_user, make_project):
    alice, bob = make_user("alice"), make_user("bob")
    mine = make_project(alice, name="Alpha Team")
    make_project(bob, name="Bravo Secret")
    shared = make_project(bob, name="Charlie Shared", members=(alice,))
    html = client_for(alice).get(reverse("project-list")).content.decode()
    assert "Alpha Team" in html and "Charlie Shared" in html
    assert "Bravo Secret" not in html
    assert project_url(mine) in html and project_url(shared) in html


def test_project_list_when_in_no_project(make_user):
    response = client_for(make_user("lonely")).get(reverse("project-list"))
    assert response.status_code == 200
    assert "not in any project yet" in response.content.decode()


def test_project_create_form(make_user):
    alice = make_user("alice")
    client = client_for(alice)
    response = client.post(reverse("project-list"), {"name": "Rocket Science", "slug": "", "description": "Boom"})
    project = Project.objects.get(slug="rocket-science")
    assert response.status_code == 302 and response["Location"] == project_url(project)
    assert project.name == "Rocket Science" and project.description == "Boom"
    assert Membership.objects.get(project=project, user=alice).role == Membership.Role.OWNER
    assert Room.objects.filter(project=project, slug="general").exists()
    page = client.get(project_url(project))
    assert page.status_code == 200 and "created" in page.content.decode()


def test_project_create_with_taken_slug_shows_form_error(make_user, make_project):
    make_project(make_user("bob"), name="Taken")
    client = client_for(make_user("alice"))
    response = client.post(reverse("project-list"), {"name": "Another", "slug": "taken"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "A project with slug &#x27;taken&#x27; already exists." in html
    assert 'value="Another"' in html  # the form comes back filled in
    assert Project.objects.filter(slug="taken").count() == 1

    # The same conflict through a name that slugifies to a taken slug.
    response = client.post(reverse("project-list"), {"name": "TAKEN"})
    assert response.status_code == 200 and "already exists" in response.content.decode()


def test_project_create_rejects_bad_input(make_user):
    client = client_for(make_user("alice"))
    blank = client.post(reverse("project-list"), {"name": ""})
    assert blank.status_code == 200 and "This field is required" in blank.content.decode()
    bad_slug = client.post(reverse("project-list"), {"name": "Fine", "slug": "not a slug!"})
    assert bad_slug.status_code == 200 and "errorlist" in bad_slug.content.decode()
    symbols = client.post(reverse("project-list"), {"name": "???"})
    assert symbols.status_code == 200 and "letters or digits" in symbols.content.decode()
    too_long = client.post(reverse("project-list"), {"name": "x" * 101})
    assert too_long.status_code == 200 and "errorlist" in too_long.content.decode()
    assert not Project.objects.exists()


def test_project_page_is_404_for_outsiders_and_missing_projects(chat_world):
    outsider = client_for(chat_world["outsider"])
    assert outsider.get(project_url(chat_world["project"])).status_code == 404
    assert outsider.get(reverse("project-detail", kwargs={"slug": "nope"})).status_code == 404
    assert client_for(chat_world["staff"]).get(project_url(chat_world["project"])).status_code == 404


def test_project_page_lists_readable_rooms_and_members(chat_world):
    html = client_for(chat_world["member"]).get(project_url(chat_world["project"])).content.decode()
    assert reverse("room-detail", kwargs={"slug": "world", "room_slug": "general"}) in html
    assert "secret" not in html  # the private room the member is not in
    for username in ("owner", "admin1", "member", "insider"):
        assert f"@{username}" in html
    assert "@outsider" not in html

    insider_html = client_for(chat_world["insider"]).get(project_url(chat_world["project"])).content.decode()
    assert reverse("room-detail", kwargs={"slug": "world", "room_slug": "secret"}) in insider_html


def _unread_badge(html: str, room: Room) -> str | None:
    row = re.search(rf'<li class="room-row" data-room-id="{room.id}">.*?</li>', html, re.S)
    assert row
    badge = re.search(r'<span class="badge" data-unread="(\d+)">', row.group(0))
    return badge.group(1) if badge else None


def test_project_page_shows_unread_counts(chat_world, make_message):
    room, member, owner = chat_world["public"], chat_world["member"], chat_world["owner"]
    client = client_for(member)
    for _ in range(3):
        make_message(room, owner)
    make_message(room, member)  # one's own messages are never unread
    assert _unread_badge(client.get(project_url(chat_world["project"])).content.decode(), room) == "3"

    client.get(reverse("room-detail", kwargs={"slug": "world", "room_slug": "general"}))
    assert _unread_badge(client.get(project_url(chat_world["project"])).content.decode(), room) is None

    make_message(room, owner)
    assert _unread_badge(client.get(project_url(chat_world["project"])).content.decode(), room) == "1"


def test_deleted_messages_are_not_unread(chat_world, make_message):
    room, owner = chat_world["public"], chat_world["owner"]
    message = make_message(room, owner)
    from chat import selectors

    chat_services.message_delete(message=selectors.message_get_for_user(user=owner, message_id=message.id), by=owner)
    html = client_for(chat_world["member"]).get(project_url(chat_world["project"])).content.decode()
    assert _unread_badge(html, room) is None


def test_invite_form_is_shown_to_admins_only(chat_world):
    project = chat_world["project"]
    for who in ("owner", "admin"):
        assert 'id="invite-form"' in client_for(chat_world[who]).get(project_url(project)).content.decode()
    assert 'id="invite-form"' not in client_for(chat_world["member"]).get(project_url(project)).content.decode()


def test_admin_invites_by_username(chat_world, make_user):
    project = chat_world["project"]
    newcomer = make_user("newcomer")
    client = client_for(chat_world["admin"])
    response = client.post(invite_url(project), {"username": "newcomer", "role": "member"})
    assert response.status_code == 302 and response["Location"] == project_url(project)
    assert Membership.objects.get(project=project, user=newcomer).role == "member"
    assert client_for(newcomer).get(project_url(project)).status_code == 200

    make_user("deputy")
    client.post(invite_url(project), {"username": "deputy", "role": "admin"})
    assert Membership.objects.get(project=project, user__username="deputy").role == "admin"


def test_invite_errors_show_on_the_form(chat_world):
    project = chat_world["project"]
    client = client_for(chat_world["owner"])
    unknown = client.post(invite_url(project), {"username": "ghost", "role": "member"})
    assert unknown.status_code == 200
    html = unknown.content.decode()
    assert "No user named &#x27;ghost&#x27;." in html and 'id="invite-form"' in html

    already = client.post(invite_url(project), {"username": "member", "role": "member"})
    assert already.status_code == 200 and "already a member" in already.content.decode()

    bad_role = client.post(invite_url(project), {"username": "outsider", "role": "owner"})
    assert bad_role.status_code == 200 and "Select a valid choice" in bad_role.content.decode()
    assert not Membership.objects.filter(project=project, user=chat_world["outsider"]).exists()


def test_members_cannot_invite(chat_world):
    project = chat_world["project"]
    response = client_for(chat_world["member"]).post(invite_url(project), {"username": "outsider", "role": "member"})
    assert response.status_code == 403
    assert not Membership.objects.filter(project=project, user=chat_world["outsider"]).exists()


def test_outsiders_get_404_from_invite(chat_world):
    project = chat_world["project"]
    response = client_for(chat_world["outsider"]).post(invite_url(project), {"username": "outsider", "role": "member"})
    assert response.status_code == 404
    assert not Membership.objects.filter(project=project, user=chat_world["outsider"]).exists()


def test_project_page_shows_room_form_errors(chat_world):
    project = chat_world["project"]
    response = client_for(chat_world["member"]).post(
        reverse("room-create", kwargs={"slug": project.slug}), {"name": "General"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "already exists in this project" in html and 'id="room-create-form"' in html
