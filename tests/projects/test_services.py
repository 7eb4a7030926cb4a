"""Invitations and leaving, through projects.services against the real database."""

from __future__ import annotations

import pytest

from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from chatsite.ratelimit import RateLimited
from projects import selectors, services
from projects.models import Invitation, Membership


def invite(project, username: str, *, by, role: str = "member") -> None:
    services.invitation_create(project=project, username=username, by=by, role=role)


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_admins_invite_and_the_invitee_accepts(chat_world, who):
    project, outsider = chat_world["project"], chat_world["outsider"]
    assert invite(project, "outsider", by=chat_world[who], role="admin") is None
    invitation = Invitation.objects.get(project=project, user=outsider)
    assert invitation.role == "admin" and invitation.invited_by == chat_world[who]
    assert not Membership.objects.filter(project=project, user=outsider).exists()  # no consent yet

    membership = services.invitation_accept(invitation=invitation, user=outsider)
    assert (membership.project, membership.user, membership.role) == (project, outsider, "admin")
    assert not Invitation.objects.exists()
    assert selectors.project_get_for_user(user=outsider, slug=project.slug)[1].role == "admin"


def test_invite_does_nothing_and_says_nothing_for_missing_members_invited_and_inactive(chat_world, make_user):
    project, owner = chat_world["project"], chat_world["owner"]
    sleeper = make_user("sleeper")
    sleeper.is_active = False
    sleeper.save()
    invite(project, "outsider", by=owner)
    first = Invitation.objects.get()
    for username in ("ghost", "member", "owner", "outsider", "sleeper", "", "  "):
        assert invite(project, username, by=owner, role="admin") is None
    assert list(Invitation.objects.all()) == [first]
    assert Invitation.objects.get().role == "member"  # the earlier invitation is left as it was


def test_invite_trims_the_username(chat_world):
    invite(chat_world["project"], "  outsider ", by=chat_world["owner"])
    assert Invitation.objects.filter(user=chat_world["outsider"]).exists()


def test_invite_permissions_and_role(chat_world):
    project = chat_world["project"]
    with pytest.raises(Forbidden):
        invite(project, "outsider", by=chat_world["member"])
    with pytest.raises(NotFound):  # not a member: the project stays hidden
        invite(project, "staff", by=chat_world["outsider"])
    with pytest.raises(InvalidInput):
        invite(project, "outsider", by=chat_world["owner"], role="owner")
    assert not Invitation.objects.exists()


def test_invites_are_rate_limited_per_inviter_whatever_the_username(chat_world, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "invite": "3/3600"}
    project, owner = chat_world["project"], chat_world["owner"]
    for username in ("ghost", "member", "outsider"):
        invite(project, username, by=owner)
    with pytest.raises(RateLimited):
        invite(project, "staff", by=owner)
    assert not Invitation.objects.filter(user=chat_world["staff"]).exists()
    invite(project, "staff", by=chat_world["admin"])  # another inviter has their own count
    assert Invitation.objects.filter(user=chat_world["staff"]).exists()


def test_only_the_invitee_accepts_or_declines(chat_world):
    project, outsider = chat_world["project"], chat_world["outsider"]
    invite(project, "outsider", by=chat_world["owner"])
    invitation = Invitation.objects.get()
    for other in (chat_world["owner"], chat_world["staff"], chat_world["member"]):
        with pytest.raises(NotFound):
            services.invitation_accept(invitation=invitation, user=other)
        with pytest.raises(NotFound):
            services.invitation_decline(invitation=invitation, user=other)
    assert Invitation.objects.filter(pk=invitation.pk).exists()
    assert not Membership.objects.filter(project=project, user=outsider).exists()


def test_decline_deletes_and_repeats_harmlessly(chat_world):
    project, outsider = chat_world["project"], chat_world["outsider"]
    invite(project, "outsider", by=chat_world["owner"])
    invitation = Invitation.objects.get()
    services.invitation_decline(invitation=invitation, user=outsider)
    services.invitation_decline(invitation=invitation, user=outsider)
    assert not Invitation.objects.exists()
    assert not Membership.objects.filter(project=project, user=outsider).exists()
    with pytest.raises(NotFound):
        services.invitation_accept(invitation=invitation, user=outsider)
    # Declining does not block a later invitation.
    invite(project, "outsider", by=chat_world["owner"])
    assert Invitation.objects.filter(user=outsider).exists()


def test_accepting_again_returns_the_membership(chat_world):
    project, outsider = chat_world["project"], chat_world["outsider"]
    invite(project, "outsider", by=chat_world["owner"])
    invitation = Invitation.objects.get()
    first = services.invitation_accept(invitation=invitation, user=outsider)
    again = services.invitation_accept(invitation=invitation, user=outsider)
    assert again.pk == first.pk
    assert Membership.objects.filter(project=project, user=outsider).count() == 1


def test_accept_keeps_a_membership_made_meanwhile(chat_world):
    project, outsider = chat_world["project"], chat_world["outsider"]
    invite(project, "outsider", by=chat_world["owner"], role="admin")
    Membership.objects.create(project=project, user=outsider, role=Membership.Role.MEMBER)
    membership = services.invitation_accept(invitation=Invitation.objects.get(), user=outsider)
    assert membership.role == "member"
    assert not Invitation.objects.exists()


def test_invitations_for_user_in_one_query(chat_world, make_project, django_assert_num_queries):
    outsider = chat_world["outsider"]
    for _ in range(3):
        project = make_project()
        invite(project, "outsider", by=project.memberships.get().user)
    invite(chat_world["project"], "member", by=chat_world["owner"])  # someone else's
    with django_assert_num_queries(1):
        rows = [(i.project.slug, i.invited_by.username, i.role) for i in selectors.invitations_for_user(user=outsider)]
    assert len(rows) == 3


def test_members_leave_and_admins_remove(chat_world):
    project = chat_world["project"]
    services.membership_remove(project=project, user=chat_world["member"], by=chat_world["member"])
    services.membership_remove(project=project, user=chat_world["insider"], by=chat_world["admin"])
    remaining = set(Membership.objects.filter(project=project).values_list("user__username", flat=True))
    assert remaining == {"owner", "admin1"}
    with pytest.raises(NotFound):
        services.membership_remove(project=project, user=chat_world["outsider"], by=chat_world["owner"])


def test_members_cannot_remove_others_and_admins_cannot_remove_owners(chat_world, make_user):
    project = chat_world["project"]
    with pytest.raises(Forbidden):
        services.membership_remove(project=project, user=chat_world["insider"], by=chat_world["member"])
    with pytest.raises(Forbidden):
        services.membership_remove(project=project, user=chat_world["owner"], by=chat_world["admin"])
    second = make_user("second-owner")
    Membership.objects.create(project=project, user=second, role=Membership.Role.OWNER)
    with pytest.raises(Forbidden):
        services.membership_remove(project=project, user=second, by=chat_world["admin"])
    services.membership_remove(project=project, user=second, by=chat_world["owner"])
    assert not Membership.objects.filter(project=project, user=second).exists()


def test_the_last_owner_cannot_leave(chat_world, make_user):
    project, owner = chat_world["project"], chat_world["owner"]
    with pytest.raises(Conflict) as exc:
        services.membership_remove(project=project, user=owner, by=owner)
    assert exc.value.code == "last_owner"
    second = make_user("second-owner")
    Membership.objects.create(project=project, user=second, role=Membership.Role.OWNER)
    services.membership_remove(project=project, user=owner, by=owner)
    with pytest.raises(Conflict):
        services.membership_remove(project=project, user=second, by=second)
    assert Membership.objects.filter(project=project, role=Membership.Role.OWNER).count() == 1
