"""JSON API endpoints for projects, their members, invitations and invite links. Mounted by chatsite.api."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from pydantic import StrictInt

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
from chatsite.errors import Forbidden
from chatsite.users import user_dict, user_display_name
from projects import selectors, services
from projects.models import Invitation, InviteLink, Membership, Project

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


# --- Invite links ---------------------------------------------------------------

# The join endpoint also answers 410 for a link that has ended.
JOIN_RESPONSES = {**ERROR_RESPONSES, 410: ErrorOut}
INVITE_LINK_MAX_HOURS = int(services.INVITE_LINK_MAX_LIFETIME / timedelta(hours=1))


class InviteLinkCreateIn(Schema):
    role: Text = Field(Membership.Role.MEMBER, description="'member' (default) or 'admin' (owners only).")
    max_uses: StrictInt | None = Field(
        None, ge=1, le=services.INVITE_LINK_MAX_USES, description="How many people may join with it; null: no limit."
    )
    expires_in_hours: StrictInt | None = Field(
        None, ge=1, le=INVITE_LINK_MAX_HOURS, description="Hours until it stops working (at most a year); null: never."
    )


class InviteLinkOut(Schema):
    id: int
    role: str = Field(..., description="The role people get by joining: member or admin.")
    max_uses: int | None = Field(..., description="Null: no limit.")
    uses: int = Field(..., description="People who joined with it so far.")
    expires_at: datetime | None = Field(..., description="Null: never.")
    revoked_at: datetime | None
    state: str = Field(..., description="active, revoked, expired or used_up.")
    created_by: UserOut | None = Field(..., description="Null when its maker's account was deleted.")
    created_at: datetime


class InviteLinkCreatedOut(InviteLinkOut):
    url: str = Field(..., description="The link to share. Shown in this answer only: only a hash of it is kept.")
    token: str = Field(..., description="The token in `url`, for POST /invite-links/join. Shown in this answer only.")


InviteLinkItem = selectable(InviteLinkOut, name="InviteLinkItem")


class InviteLinkPage(Schema):
    items: list[InviteLinkItem]  # type: ignore[valid-type]
    next_cursor: str | None


class InviteLinkJoinIn(Schema):
    token: Text = Field(..., description="The token of the link: the part of its URL after /join/.")


def _invite_link_dict(link: InviteLink, *, now: datetime) -> dict[str, Any]:
    maker = link.created_by
    return {
        "id": link.id,
        "role": link.role,
        "max_uses": link.max_uses,
        "uses": link.uses,
        "expires_at": link.expires_at,
        "revoked_at": link.revoked_at,
        "state": link.state_at(now),
        "created_by": user_dict(maker) if maker is not None else None,
        "created_at": link.created_at,
    }


def _require_link_manager(membership: Membership) -> None:
    if not membership.is_admin:
        raise Forbidden("Only project admins can manage invite links.")


@router.post("/projects/{slug}/invite-links", response={201: InviteLinkCreatedOut, **ERROR_RESPONSES}, tags=["invite links"])
def invite_link_create(request: HttpRequest, slug: str, payload: InviteLinkCreateIn) -> Status:
    """Make an invite link. Project admins and owners; only owners make `admin` links.

    The answer carries the link's `url` and `token` once: only a hash is
    kept. Counts against the maker's invite-link rate limit.
    """
    project, _ = selectors.project_get_for_user(user=request.auth, slug=slug)
    expires_at = None
    if payload.expires_in_hours is not None:
        expires_at = timezone.now() + timedelta(hours=payload.expires_in_hours)
    link, raw = services.invite_link_create(
        project=project, by=request.auth, role=payload.role, max_uses=payload.max_uses, expires_at=expires_at
    )
    url = request.build_absolute_uri(reverse("invite-link-join", kwargs={"token": raw}))
    return Status(201, {**_invite_link_dict(link, now=timezone.now()), "url": url, "token": raw})


@router.get(
    "/projects/{slug}/invite-links",
    response={200: InviteLinkPage, **ERROR_RESPONSES},
    exclude_unset=True,
    tags=["invite links"],
)
def invite_link_list(request: HttpRequest, slug: str, page: Query[PageQuery]) -> dict[str, Any]:
    """The project's invite links, newest first, ended ones included; never their tokens. Project admins and owners.

    Page size: `limit` (default 50; values above 100 are treated as 100).
    `fields` picks the link fields returned.
    """
    fields = fields_parse(page.fields, schema=InviteLinkOut)
    project, membership = selectors.project_get_for_user(user=request.auth, slug=slug)
    _require_link_manager(membership)
    limit = page_limit(page.limit)
    links = selectors.invite_links_for_project(project=project)
    before_id = page_cursor_key(page.cursor, key="b", kind=int)
    if before_id is not None:
        links = links.filter(id__lt=before_id)
    rows = list(links[: limit + 1])
    items = rows[:limit]
    next_cursor = page_cursor_encode({"b": items[-1].id}) if len(rows) > limit else None
    now = timezone.now()
    return {
        "items": fields_select((_invite_link_dict(link, now=now) for link in items), fields),
        "next_cursor": next_cursor,
    }


@router.delete(
    "/projects/{slug}/invite-links/{link_id}", response={204: None, **ERROR_RESPONSES}, tags=["invite links"]
)
def invite_link_revoke(request: HttpRequest, slug: str, link_id: int) -> Status:
    """Revoke an invite link: it stops working at once. Project admins and owners; revoking twice is `204` too.

    Another project's link id answers like one that does not exist (`404`).
    """
    project, membership = selectors.project_get_for_user(user=request.auth, slug=slug)
    _require_link_manager(membership)
    link = selectors.invite_link_get_for_project(project=project, link_id=link_id)
    services.invite_link_revoke(link=link, by=request.auth)
    return Status(204, None)


@router.post(
    "/invite-links/join", response={200: ProjectOut, 201: ProjectOut, **JOIN_RESPONSES}, tags=["invite links"]
)
def invite_link_join(request: HttpRequest, payload: InviteLinkJoinIn) -> Status:
    """Join a project with an invite link's token, with the link's role.

    `201` with the project (as `GET /projects/{slug}`) when you joined; `200`
    when you were a member already (no use is counted, your role stays).
    An unknown token is `404`; a link that has ended is `410` with code
    `revoked`, `expired` or `used_up`.
    """
    membership, joined = services.invite_link_join(token=payload.token, user=request.auth)
    return Status(201 if joined else 200, _project_dict(membership.project, role=membership.role))
