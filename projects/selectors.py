"""Reads of projects, memberships, invitations and invite links."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, Q, QuerySet

from chatsite.errors import NotFound
from perf import cache as perf_cache
from perf.cache import cache_key
from projects.models import Invitation, InviteLink, Membership, Project


def project_cache_key(slug: str) -> str:
    return cache_key("project", slug)


def membership_cache_key(project_id: int, user_id: int) -> str:
    return cache_key("membership", project_id, user_id)


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

    Cached: the project (family ``projects``, invalidated by project_update
    and project_create) and the membership (family ``access``, invalidated by
    invitation_accept / membership_remove). Memoized per request.
    """
    if not user.is_authenticated:
        raise NotFound("Project not found.")
    memo = perf_cache.request_memo()
    if memo is not None and ("project", slug) in memo:
        return memo[("project", slug)]
    project_key = project_cache_key(slug)
    project = perf_cache.get_many_counted({project_key: "projects"}).get(project_key)
    if project is None:
        project = Project.objects.filter(slug=slug).first()
        perf_cache.store(project_key, project, family="projects")
    if not isinstance(project, Project):
        raise NotFound("Project not found.")
    membership_key = membership_cache_key(project.id, user.pk)
    membership = perf_cache.get_many_counted({membership_key: "access"}).get(membership_key)
    if membership is None:
        membership = Membership.objects.filter(project=project, user=user).first()
        perf_cache.store(membership_key, membership, family="access")
    if not isinstance(membership, Membership):
        raise NotFound("Project not found.")
    membership.project = project
    if memo is not None:
        memo[("project", slug)] = (project, membership)
    return project, membership


def project_members(*, project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project)
        .select_related("user")
        .only("id", "role", "joined_at", "project_id", "user__id", "user__username", "user__first_name", "user__last_name")
        .order_by("user__username")
    )


def project_member_get(*, project: Project, user_id: int) -> Membership:
    """The membership of user ``user_id`` in ``project``, with the user.

    Raises NotFound alike for an unknown user id and for a user outside the
    project.
    """
    membership = Membership.objects.select_related("user").filter(project=project, user_id=user_id).first()
    if membership is None:
        raise NotFound("Member not found.")
    return membership


def invitations_for_user(*, user: AbstractBaseUser) -> QuerySet[Invitation]:
    """The user's pending invitations, oldest first, with their project and inviter in the same query."""
    return (
        Invitation.objects.filter(user=user)
        .select_related("project", "invited_by")
        .only(
            "id",
            "role",
            "created_at",
            "user_id",
            "project__id",
            "project__slug",
            "project__name",
            "invited_by__id",
            "invited_by__username",
            "invited_by__first_name",
            "invited_by__last_name",
        )
        .order_by("id")
    )


def invitation_get_for_user(*, user: AbstractBaseUser, invitation_id: int) -> Invitation:
    """The user's own pending invitation ``invitation_id``, with its project.

    Raises NotFound alike when it does not exist and when it is someone
    else's, so an id tells nothing about other people's invitations.
    """
    invitation = None
    if user.is_authenticated:
        invitation = Invitation.objects.select_related("project").filter(pk=invitation_id, user=user).first()
    if invitation is None:
        raise NotFound("Invitation not found.")
    return invitation


def invite_links_for_project(*, project: Project) -> QuerySet[InviteLink]:
    """The project's invite links, newest first (ended ones too), with their makers in the same query."""
    return (
        InviteLink.objects.filter(project=project)
        .select_related("created_by")
        .only(
            "id",
            "project_id",
            "role",
            "max_uses",
            "uses",
            "expires_at",
            "revoked_at",
            "created_at",
            "created_by__id",
            "created_by__username",
            "created_by__first_name",
            "created_by__last_name",
        )
        .order_by("-id")
    )


def invite_links_live(*, project: Project, now: datetime) -> QuerySet[InviteLink]:
    """The project's links that still work at ``now``, newest first."""
    return (
        invite_links_for_project(project=project)
        .filter(revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .filter(Q(max_uses__isnull=True) | Q(uses__lt=F("max_uses")))
    )


def invite_link_get_for_project(*, project: Project, link_id: int) -> InviteLink:
    """Invite link ``link_id`` of ``project``, with the project; NotFound alike for a missing one and another project's."""
    link = InviteLink.objects.select_related("project").filter(pk=link_id, project=project).first()
    if link is None:
        raise NotFound("Invite link not found.")
    return link


def invite_link_get_by_token(*, token: str) -> InviteLink:
    """The invite link with raw ``token``, with its project, whatever its state; NotFound for an unknown token."""
    link = InviteLink.objects.select_related("project").filter(token_hash=InviteLink.hash_token(token or "")).first()
    if link is None:
        raise NotFound("Invite link not found.")
    return link
