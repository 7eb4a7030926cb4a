"""JSON API endpoints for projects, their members and invitations. Mounted by chatsite.api."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status

from chatsite.api_schemas import (
    ERROR_RESPONSES,
    ErrorOut,
    PageQuery,
    Text,
    UserOut,
    fields_parse,
    fields_select,
    page_cursor_encode,
    page_cursor_key,
    page_limit,
    selectable,
)
from chatsite.users import user_dict, user_display_name
from projects import selectors, services
from projects.models import Invitation, Membership, Project

router = Router(tags=["projects"])


class ProjectCreateIn(Schema):
    name: Text
    slug: Text | None = Field(None, description="Derived from the name when omitted.")
    description: Text = ""


class ProjectOut(Schema):
    slug: str
    name: str
    description: str
    archived: bool
    role: str = Field(..., description="The caller's role: owner, admin or member.")
    created_at: datetime


ProjectItem = selectable(ProjectOut, name="ProjectItem")


class ProjectPage(Schema):
    items: list[ProjectItem]  # type: ignore[valid-type]
    next_cursor: str | None


class InviteIn(Schema):
    username: Text
    role: Text = Field(Membership.Role.MEMBER, description="'member' or 'admin'.")


class InvitedOut(Schema):
    detail: str
    code: str


# The one answer to every invitation an admin may send: it never tells whether
# the username exists, is a member already or was invited already.
INVITED = {"detail": "If that user exists and is not a member, they have been invited.", "code": "invited"}


class InvitationProjectOut(Schema):
    slug: str
    name: str


class InvitationOut(Schema):
    id: int
    project: InvitationProjectOut
    role: str = Field(..., description="The role you get by accepting: admin or member.")
    invited_by: UserOut | None = Field(..., description="Null when the inviter's account was deleted.")
    created_at: datetime


InvitationItem = selectable(InvitationOut, name="InvitationItem")


class InvitationPage(Schema):
    items: list[InvitationItem]  # type: ignore[valid-type]
    next_cursor: str | None


class MemberOut(Schema):
    id: int
    username: str
    display_name: str
    role: str
    joined_at: datetime


MemberItem = selectable(MemberOut, name="MemberItem")


class MemberPage(Schema):
    items: list[MemberItem]  # type: ignore[valid-type]
    next_cursor: str | None


def _project_dict(project: Project, *, role: str) -> dict[str, Any]:
    return {
        "slug": project.slug,
        "name": project.name,
        "description": project.description,
        "archived": project.archived,
        "role": role,
        "created_at": project.created_at,
    }


def _invitation_dict(invitation: Invitation) -> dict[str, Any]:
    inviter = invitation.invited_by
    return {
        "id": invitation.id,
        "project": {"slug": invitation.project.slug, "name": invitation.project.name},
        "role": invitation.role,
        "invited_by": user_dict(inviter) if inviter is not None else None,
        "created_at": invitation.created_at,
    }


def _member_dict(membership: Membership) -> dict[str, Any]:
    user = membership.user
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user_display_name(user),
        "role": membership.role,
        "joined_at": membership.joined_at,
    }


@router.get("/projects", response={200: ProjectPage, 401: ErrorOut, 400: ErrorOut}, exclude_unset=True)
def project_list(request: HttpRequest, page: Query[PageQuery]) -> dict[str, Any]:
    """The caller's projects with their role, in creation (id) order.

    Page size: `limit` (default 50; values above 100 are treated as 100).
    `fields` picks the project fields returned.
    """
    fields = fields_parse(page.fields, schema=ProjectOut)
    limit = page_limit(page.limit)
    # Paged by id, not name: a rename between two fetches cannot skip or repeat a project.
    projects = selectors.projects_for_user(user=request.auth).order_by("id")
    after_id = page_cursor_key(page.cursor, key="i", kind=int)
    if after_id is not None:
        projects = projects.filter(id__gt=after_id)
    rows = list(projects[: limit + 1])
    items = rows[:limit]
    next_cursor = page_cursor_encode({"i": items[-1].id}) if len(rows) > limit else None
    return {
        "items": fields_select((_project_dict(p, role=p.my_role) for p in items), fields),
        "next_cursor": next_cursor,
    }


@router.post("/projects", response={201: ProjectOut, **ERROR_RESPONSES})
def project_create(request: HttpRequest, payload: ProjectCreateIn) -> Status:
    """Create a project; the caller becomes its owner and a public room "general" is created."""
    project = services.project_create(
        user=request.auth, name=payload.name, slug=payload.slug, description=payload.description
    )
    return Status(201, _project_dict(project, role=Membership.Role.OWNER))


@router.get("/projects/{slug}", response={200: ProjectOut, **ERROR_RESPONSES})
def project_detail(request: HttpRequest, slug: str) -> dict[str, Any]:
    project, membership = selectors.project_get_for_user(user=request.auth, slug=slug)
    return _project_dict(project, role=membership.role)


@router.get("/projects/{slug}/members", response={200: MemberPage, **ERROR_RESPONSES}, exclude_unset=True)
def member_list(request: HttpRequest, slug: str, page: Query[PageQuery]) -> dict[str, Any]:
    """The members of a project by username.

    Page size: `limit` (default 50; values above 100 are treated as 100).
    `fields` picks the member fields returned.
    """
    fields = fields_parse(page.fields, schema=MemberOut)
    project, _ = selectors.project_get_for_user(user=request.auth, slug=slug)
    limit = page_limit(page.limit)
    members = selectors.project_members(project=project)
    after_username = page_cursor_key(page.cursor, key="u", kind=str)
    if after_username is not None:
        members = members.filter(user__username__gt=after_username)
    rows = list(members[: limit + 1])
    items = rows[:limit]
    next_cursor = page_cursor_encode({"u": items[-1].user.username}) if len(rows) > limit else None
    return {"items": fields_select(map(_member_dict, items), fields), "next_cursor": next_cursor}


@router.post("/projects/{slug}/invitations", response={202: InvitedOut, **ERROR_RESPONSES})
def invitation_create(request: HttpRequest, slug: str, payload: InviteIn) -> Status:
    """Invite a user to the project by username. Project admins and owners only.

    The answer is the same whether or not the username exists, is a member
    already or was invited already: the invited person sees the invitation
    in `GET /invitations` and decides. Counts against the inviter's
    invitation rate limit.
    """
    project, _ = selectors.project_get_for_user(user=request.auth, slug=slug)
    services.invitation_create(project=project, username=payload.username, by=request.auth, role=payload.role)
    return Status(202, INVITED)


@router.delete("/projects/{slug}/members/{user_id}", response={204: None, **ERROR_RESPONSES})
def member_remove(request: HttpRequest, slug: str, user_id: int) -> Status:
    """Remove a member. Project admins and owners (only an owner removes an owner); your own id leaves."""
    project, _ = selectors.project_get_for_user(user=request.auth, slug=slug)
    membership = selectors.project_member_get(project=project, user_id=user_id)
    services.membership_remove(project=project, user=membership.user, by=request.auth)
    return Status(204, None)


@router.post("/projects/{slug}/leave", response={204: None, **ERROR_RESPONSES})
def project_leave(request: HttpRequest, slug: str) -> Status:
    """Leave the project. The last owner cannot (409 `last_owner`)."""
    project, _ = selectors.project_get_for_user(user=request.auth, slug=slug)
    services.membership_remove(project=project, user=request.auth, by=request.auth)
    return Status(204, None)


# --- Invitations to the caller ----------------------------------------------


@router.get(
    "/invitations", response={200: InvitationPage, **ERROR_RESPONSES}, exclude_unset=True, tags=["invitations"]
)
def invitation_list(request: HttpRequest, page: Query[PageQuery]) -> dict[str, Any]:
    """Your pending invitations, oldest first, with the project and who invited you.

    Page size: `limit` (default 50; values above 100 are treated as 100).
    `fields` picks the invitation fields returned.
    """
    fields = fields_parse(page.fields, schema=InvitationOut)
    limit = page_limit(page.limit)
    invitations = selectors.invitations_for_user(user=request.auth)
    after_id = page_cursor_key(page.cursor, key="i", kind=int)
    if after_id is not None:
        invitations = invitations.filter(id__gt=after_id)
    rows = list(invitations[: limit + 1])
    items = rows[:limit]
    next_cursor = page_cursor_encode({"i": items[-1].id}) if len(rows) > limit else None
    return {"items": fields_select(map(_invitation_dict, items), fields), "next_cursor": next_cursor}


@router.post(
    "/invitations/{invitation_id}/accept", response={201: ProjectOut, **ERROR_RESPONSES}, tags=["invitations"]
)
def invitation_accept(request: HttpRequest, invitation_id: int) -> Status:
    """Accept one of your invitations: you join the project with the invited role.

    Two accepts racing (a double click) both answer `201`; once accepted the
    invitation is gone, so a later repeat is `404`. Someone else's
    invitation is `404`, as a missing one.
    """
    invitation = selectors.invitation_get_for_user(user=request.auth, invitation_id=invitation_id)
    membership = services.invitation_accept(invitation=invitation, user=request.auth)
    return Status(201, _project_dict(membership.project, role=membership.role))


@router.post(
    "/invitations/{invitation_id}/decline", response={204: None, **ERROR_RESPONSES}, tags=["invitations"]
)
def invitation_decline(request: HttpRequest, invitation_id: int) -> Status:
    """Decline one of your invitations; the inviter is not told. Someone else's is `404`, as a missing one."""
    invitation = selectors.invitation_get_for_user(user=request.auth, invitation_id=invitation_id)
    services.invitation_decline(invitation=invitation, user=request.auth)
    return Status(204, None)
