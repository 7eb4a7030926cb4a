"""The project list and project pages, through django.test.Client against the real database."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

from chat.models import Room
from chat.services import messages as message_services
from projects import services as project_services
from projects.models import Invitation, Membership, Project


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
    from chat.selectors import history as history_selectors

    message_services.message_delete(message=history_selectors.message_get_for_user(user=owner, message_id=message.id), by=owner)
    html = client_for(chat_world["member"]).get(project_url(chat_world["project"])).content.decode()
    assert _unread_badge(html, room) is None


def test_invite_form_is_shown_to_admins_only(chat_world):
    project = chat_world["project"]
    for who in ("owner", "admin"):
        assert 'id="invite-form"' in client_for(chat_world[who]).get(project_url(project)).content.decode()
    assert 'id="invite-form"' not in client_for(chat_world["member"]).get(project_url(project)).content.decode()


INVITED = "If that user exists and is not a member, they have been invited."


def _flash(client: Client, response) -> str:
    """The page a redirect leads to, with its flash messages."""
    assert response.status_code == 302
    return client.get(response["Location"]).content.decode()


def test_admin_invites_and_the_invitee_accepts(chat_world):
    project, outsider = chat_world["project"], chat_world["outsider"]
    client = client_for(chat_world["admin"])
    response = client.post(invite_url(project), {"username": "outsider", "role": "admin"})
    assert response.status_code == 302 and response["Location"] == project_url(project)
    assert INVITED in _flash(client, response)
    assert not Membership.objects.filter(project=project, user=outsider).exists()

    invitee = client_for(outsider)
    listing = invitee.get(reverse("project-list")).content.decode()
    invitation = Invitation.objects.get()
    assert 'id="invitations"' in listing and "World" in listing and "from @admin1" in listing
    assert reverse("invitation-accept", kwargs={"invitation_id": invitation.id}) in listing
    assert reverse("invitation-decline", kwargs={"invitation_id": invitation.id}) in listing

    accepted = invitee.post(reverse("invitation-accept", kwargs={"invitation_id": invitation.id}))
    assert accepted["Location"] == project_url(project)
    assert "You joined World." in _flash(invitee, accepted)
    assert Membership.objects.get(project=project, user=outsider).role == "admin"
    assert 'id="invitations"' not in invitee.get(reverse("project-list")).content.decode()
    # A second click finds the invitation gone and says only that.
    again = invitee.post(reverse("invitation-accept", kwargs={"invitation_id": invitation.id}))
    assert again["Location"] == reverse("project-list")
    assert "That invitation is no longer pending." in _flash(invitee, again)


def test_invite_page_answer_is_the_same_whatever_the_username(chat_world):
    project = chat_world["project"]
    client_for(chat_world["owner"]).post(invite_url(project), {"username": "staff", "role": "member"})
    pages = set()
    for username in ("outsider", "ghost", "member", "staff"):
        client = client_for(chat_world["owner"])  # a fresh session each time: only this answer's flash
        response = client.post(invite_url(project), {"username": username, "role": "member"})
        assert response.status_code == 302 and response["Location"] == project_url(project)
        page = _flash(client, response)
        assert INVITED in page
        pages.add(re.search(r'<ul class="flash">.*?</ul>', page, re.S).group(0))
    assert len(pages) == 1
    assert set(Invitation.objects.values_list("user__username", flat=True)) == {"outsider", "staff"}


def test_invitee_declines(chat_world):
    project, outsider = chat_world["project"], chat_world["outsider"]
    client_for(chat_world["owner"]).post(invite_url(project), {"username": "outsider", "role": "member"})
    invitation = Invitation.objects.get()
    invitee = client_for(outsider)
    declined = invitee.post(reverse("invitation-decline", kwargs={"invitation_id": invitation.id}))
    assert declined["Location"] == reverse("project-list")
    assert "You declined the invitation to World." in _flash(invitee, declined)
    assert not Invitation.objects.exists()
    assert not Membership.objects.filter(project=project, user=outsider).exists()


def test_someone_elses_invitation_changes_nothing(chat_world):
    client_for(chat_world["owner"]).post(invite_url(chat_world["project"]), {"username": "outsider", "role": "member"})
    invitation = Invitation.objects.get()
    other = client_for(chat_world["staff"])
    for name in ("invitation-accept", "invitation-decline"):
        theirs = other.post(reverse(name, kwargs={"invitation_id": invitation.id}))
        missing = other.post(reverse(name, kwargs={"invitation_id": invitation.id + 1000}))
        assert theirs["Location"] == missing["Location"] == reverse("project-list")
        assert "That invitation is no longer pending." in _flash(other, theirs)
    assert Invitation.objects.filter(pk=invitation.pk).exists()
    assert not Membership.objects.filter(user__in=[chat_world["staff"], chat_world["outsider"]]).exists()


def test_invitation_answers_need_post(chat_world):
    client_for(chat_world["owner"]).post(invite_url(chat_world["project"]), {"username": "outsider", "role": "member"})
    invitation = Invitation.objects.get()
    invitee = client_for(chat_world["outsider"])
    assert invitee.get(reverse("invitation-accept", kwargs={"invitation_id": invitation.id})).status_code == 405
    assert Invitation.objects.exists()


def test_invite_form_errors(chat_world, settings):
    project = chat_world["project"]
    client = client_for(chat_world["owner"])
    bad_role = client.post(invite_url(project), {"username": "outsider", "role": "owner"})
    assert bad_role.status_code == 200 and "Select a valid choice" in bad_role.content.decode()
    empty = client.post(invite_url(project), {"username": "", "role": "member"})
    assert empty.status_code == 200 and "This field is required" in empty.content.decode()
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "invite": "1/3600"}
    client.post(invite_url(project), {"username": "ghost", "role": "member"})
    limited = client.post(invite_url(project), {"username": "outsider", "role": "member"})
    assert limited.status_code == 200 and "Too many invitations" in limited.content.decode()
    assert not Invitation.objects.exists()


def test_members_cannot_invite(chat_world):
    project = chat_world["project"]
    response = client_for(chat_world["member"]).post(invite_url(project), {"username": "outsider", "role": "member"})
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_outsiders_get_404_from_invite(chat_world):
    project = chat_world["project"]
    response = client_for(chat_world["outsider"]).post(invite_url(project), {"username": "outsider", "role": "member"})
    assert response.status_code == 404
    assert not Invitation.objects.exists()


def test_project_list_shows_at_most_a_page_of_invitations(chat_world, make_project, monkeypatch):
    from projects import views

    monkeypatch.setattr(views, "LIST_INVITATIONS", 2)
    for _ in range(3):
        other = make_project()
        project_services.invitation_create(project=other, username="outsider", by=other.memberships.get().user)
    html = client_for(chat_world["outsider"]).get(reverse("project-list")).content.decode()
    assert html.count("data-invitation-id=") == 2 and "Showing your oldest invitations" in html


# --- Leaving and removing ------------------------------------------------------------


def leave_url(project: Project) -> str:
    return reverse("project-leave", kwargs={"slug": project.slug})


def remove_url(project: Project, user) -> str:
    return reverse("project-member-remove", kwargs={"slug": project.slug, "user_id": user.id})


def test_leave_button_for_members_but_not_the_last_owner(chat_world, make_user):
    project = chat_world["project"]
    for who in ("member", "admin"):
        assert 'id="leave-form"' in client_for(chat_world[who]).get(project_url(project)).content.decode()
    assert 'id="leave-form"' not in client_for(chat_world["owner"]).get(project_url(project)).content.decode()
    Membership.objects.create(project=project, user=make_user("co-owner"), role=Membership.Role.OWNER)
    assert 'id="leave-form"' in client_for(chat_world["owner"]).get(project_url(project)).content.decode()


def test_member_leaves(chat_world):
    project, member = chat_world["project"], chat_world["member"]
    client = client_for(member)
    response = client.post(leave_url(project))
    assert response["Location"] == reverse("project-list")
    assert "You left World." in _flash(client, response)
    assert not Membership.objects.filter(project=project, user=member).exists()
    assert client.get(project_url(project)).status_code == 404
    assert client.post(leave_url(project)).status_code == 404


def test_last_owner_leaving_is_refused_on_the_page(chat_world):
    project, owner = chat_world["project"], chat_world["owner"]
    client = client_for(owner)
    response = client.post(leave_url(project))
    assert response["Location"] == project_url(project)
    assert "The last owner cannot leave the project." in _flash(client, response)
    assert Membership.objects.filter(project=project, user=owner).exists()


def _remove_buttons(html: str) -> set[str]:
    return set(re.findall(r'action="(/p/world/members/\d+/remove/)"', html))


def test_remove_buttons_follow_the_rules(chat_world):
    project = chat_world["project"]
    owner, admin, member, insider = (chat_world[w] for w in ("owner", "admin", "member", "insider"))
    as_owner = _remove_buttons(client_for(owner).get(project_url(project)).content.decode())
    assert as_owner == {remove_url(project, u) for u in (admin, member, insider)}
    as_admin = _remove_buttons(client_for(admin).get(project_url(project)).content.decode())
    assert as_admin == {remove_url(project, u) for u in (member, insider)}  # not the owner, not themself
    assert _remove_buttons(client_for(member).get(project_url(project)).content.decode()) == set()


def test_admin_removes_a_member(chat_world):
    project, member = chat_world["project"], chat_world["member"]
    client = client_for(chat_world["admin"])
    response = client.post(remove_url(project, member))
    assert response["Location"] == project_url(project)
    assert "member was removed from World." in _flash(client, response)
    assert not Membership.objects.filter(project=project, user=member).exists()


def test_remove_refusals(chat_world):
    project = chat_world["project"]
    assert client_for(chat_world["member"]).post(remove_url(project, chat_world["insider"])).status_code == 403
    assert client_for(chat_world["admin"]).post(remove_url(project, chat_world["owner"])).status_code == 403
    owner = client_for(chat_world["owner"])
    assert owner.post(remove_url(project, chat_world["outsider"])).status_code == 404
    nobody = reverse("project-member-remove", kwargs={"slug": "world", "user_id": 987654321})
    assert owner.post(nobody).status_code == 404
    assert client_for(chat_world["outsider"]).post(remove_url(project, chat_world["member"])).status_code == 404
    assert Membership.objects.filter(project=project).count() == 4


def test_removing_oneself_is_leaving(chat_world):
    project, member = chat_world["project"], chat_world["member"]
    response = client_for(member).post(remove_url(project, member))
    assert response["Location"] == reverse("project-list")
    assert not Membership.objects.filter(project=project, user=member).exists()


def test_new_project_routes_need_login(chat_world):
    project = chat_world["project"]
    client = Client()
    for url in (
        leave_url(project),
        remove_url(project, chat_world["member"]),
        reverse("invitation-accept", kwargs={"invitation_id": 1}),
        reverse("invitation-decline", kwargs={"invitation_id": 1}),
    ):
        response = client.post(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login") + "?next="), url


def test_project_page_shows_room_form_errors(chat_world):
    project = chat_world["project"]
    response = client_for(chat_world["member"]).post(
        reverse("room-create", kwargs={"slug": project.slug}), {"name": "General"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "already exists in this project" in html and 'id="room-create-form"' in html
