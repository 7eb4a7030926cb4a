from __future__ import annotations

from django.conf import settings
from django.db import models


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
