"""Reads of projects and memberships."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from chatsite.errors import NotFound
from projects.models import Membership, Project


def membership_get(*, user: AbstractBaseUser, project: Project) -> Membership | None:
    """The user's membership of ``project``, or None. Anonymous users have none."""
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(project=project, user=user).first()


def projects_for_user(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """Projects the user belongs to, by name; each carries ``my_role``."""
    from django.db.models import F

    return (
        Project.objects.filter(memberships__user=user)
        .annotate(my_role=F("memberships__role"))
        .order_by("name", "id")
    )


def project_get_for_user(*, user: AbstractBaseUser, slug: str) -> tuple[Project, Membership]:
    """The project with ``slug`` and the user's membership of it.

    Raises NotFound both when it does not exist and when the user is not a
    member, so a guess never learns that a project exists.
    """
    if not user.is_authenticated:
        raise NotFound("Project not found.")
    membership = (
        Membership.objects.select_related("project").filter(project__slug=slug, user=user).first()
    )
    if membership is None:
        raise NotFound("Project not found.")
    return membership.project, membership


def project_members(*, project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project)
        .select_related("user")
        .only("id", "role", "joined_at", "project_id", "user__id", "user__username", "user__first_name", "user__last_name")
        .order_by("user__username")
    )
