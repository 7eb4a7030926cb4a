from __future__ import annotations

import hashlib
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q


class Project(models.Model):
    """A workspace. People belong to it through Membership."""

    slug = models.SlugField(max_length=64, db_index=False)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    archived = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            # project by slug (every project URL); a plain unique index, no LIKE twin
            models.UniqueConstraint(fields=["slug"], name="project_slug_uniq"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # membership check (project, user) and the member list of a project
            models.UniqueConstraint(fields=["project", "user"], name="membership_project_user_uniq"),
        ]
        indexes = [
            # projects_for_user: a user's projects, newest membership first
            models.Index(fields=["user", "project"], name="membership_user_project_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.project_id} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class Invitation(models.Model):
    """An offer to join a project, waiting for the invited person to accept or decline it.

    Accepting makes the Membership and deletes the invitation; declining
    deletes it. Only pending invitations exist.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations", db_index=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations", db_index=False
    )
    role = models.CharField(
        max_length=16,
        choices=[(Membership.Role.ADMIN, "Admin"), (Membership.Role.MEMBER, "Member")],
        default=Membership.Role.MEMBER,
    )
    # Pending invitations are few and users are rarely deleted, so the
    # SET NULL on a user's deletion does without an index of its own.
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # one pending invitation per person and project (invitation_create's
            # "already invited" check), and the project's invitations (deleted
            # with the project)
            models.UniqueConstraint(fields=["project", "user"], name="invitation_project_user_uniq"),
        ]
        indexes = [
            # invitations_for_user: the invitee's pending list, paged by id
            models.Index(fields=["user", "id"], name="invitation_user_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} invited to {self.project_id} ({self.role})"


class InviteLink(models.Model):
    """A link anyone logged in may use to join a project, made by its owners and admins.

    Only the SHA-256 of the link's token is stored (as for API tokens), so the
    link can be shown once, when it is made. A link ends when it is revoked,
    when ``expires_at`` passes or when ``uses`` reaches ``max_uses``; ended
    links are kept, so their owners can see what they did.
    """

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        REVOKED = "revoked", "Revoked"
        EXPIRED = "expired", "Expired"
        USED_UP = "used_up", "Used up"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invite_links", db_index=False)
    token_hash = models.CharField(max_length=64)
    role = models.CharField(
        max_length=16,
        choices=[(Membership.Role.ADMIN, "Admin"), (Membership.Role.MEMBER, "Member")],
        default=Membership.Role.MEMBER,
    )
    max_uses = models.PositiveIntegerField(null=True, blank=True)
    uses = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Links are few per user and users are rarely deleted: no index for the SET NULL.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # the join page's lookup by token (a plain unique index: no LIKE twin)
            models.UniqueConstraint(fields=["token_hash"], name="invitelink_token_hash_uniq"),
            # the join's conditional count can never pass the limit, whatever writes it
            models.CheckConstraint(
                condition=Q(max_uses__isnull=True) | (Q(max_uses__gte=1) & Q(uses__lte=models.F("max_uses"))),
                name="invitelink_uses_within_max",
            ),
        ]
        indexes = [
            # invite_links_for_project: a project's links, newest first, paged by id
            models.Index(fields=["project", "id"], name="invitelink_project_id_idx"),
        ]

    def __str__(self) -> str:
        return f"invite link {self.pk} to {self.project_id} ({self.role})"

    @staticmethod
    def hash_token(raw_token: str) -> str:
        """The stored form of a raw token (what ``token_hash`` holds)."""
        return hashlib.sha256(raw_token.encode()).hexdigest()

    def state_at(self, now: datetime) -> str:
        """Why the link no longer works at ``now`` (revoked first), or ``active``."""
        if self.revoked_at is not None:
            return self.State.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return self.State.EXPIRED
        if self.max_uses is not None and self.uses >= self.max_uses:
            return self.State.USED_UP
        return self.State.ACTIVE
