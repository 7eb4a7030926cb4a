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
