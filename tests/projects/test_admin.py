"""Pending invitations in the Django admin."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from projects import services
from projects.models import Invitation


def test_staff_lists_searches_and_edits_invitations(chat_world):
    services.invitation_create(project=chat_world["project"], username="outsider", by=chat_world["owner"])
    invitation = Invitation.objects.get()
    client = Client()
    client.force_login(chat_world["staff"])  # staff users are superusers (chat.services.accounts.user_create)
    changelist = reverse("admin:projects_invitation_changelist")
    listing = client.get(changelist)
    assert listing.status_code == 200
    assert reverse("admin:projects_invitation_change", args=[invitation.pk]) in listing.content.decode()
    assert "outsider" in client.get(changelist, {"q": "outsider"}).content.decode()
    assert reverse("admin:projects_invitation_change", args=[invitation.pk]) not in client.get(
        changelist, {"q": "nobody"}
    ).content.decode()
    change = client.get(reverse("admin:projects_invitation_change", args=[invitation.pk]))
    assert change.status_code == 200
    assert 'class="admin-autocomplete' in change.content.decode()


def test_non_staff_cannot_see_invitations_in_the_admin(chat_world):
    client = Client()
    client.force_login(chat_world["owner"])
    response = client.get(reverse("admin:projects_invitation_changelist"))
    assert response.status_code == 302


def test_staff_see_invite_links_read_only_and_never_the_hash(chat_world):
    from projects.models import InviteLink

    link, raw = services.invite_link_create(project=chat_world["project"], by=chat_world["owner"], max_uses=4)
    stored_hash = InviteLink.objects.get().token_hash
    client = Client()
    client.force_login(chat_world["staff"])
    changelist = reverse("admin:projects_invitelink_changelist")
    listing = client.get(changelist)
    assert listing.status_code == 200
    assert reverse("admin:projects_invitelink_change", args=[link.pk]) in listing.content.decode()
    assert "world" in client.get(changelist, {"q": "world"}).content.decode()
    change = client.get(reverse("admin:projects_invitelink_change", args=[link.pk]))
    assert change.status_code == 200
    html = change.content.decode()
    assert "active" in html and "owner" in html
    for secret in (stored_hash, raw):
        assert secret not in listing.content.decode() and secret not in html
    assert 'name="max_uses"' not in html  # read-only
    assert client.get(reverse("admin:projects_invitelink_add")).status_code == 403
    # Staff may delete a link (it stops working).
    delete = client.post(reverse("admin:projects_invitelink_delete", args=[link.pk]), {"post": "yes"})
    assert delete.status_code == 302 and not InviteLink.objects.exists()


def test_non_staff_cannot_see_invite_links_in_the_admin(chat_world):
    client = Client()
    client.force_login(chat_world["owner"])
    assert client.get(reverse("admin:projects_invitelink_changelist")).status_code == 302
