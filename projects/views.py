"""Project pages: the project list with its create form and the user's invitations, a project's page, invite links.

Views are thin: they validate the form, call one selector or service, and
render or redirect. A project the user may not see answers 404 whether or not
it exists (projects.selectors.project_get_for_user).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from chatsite import ratelimit
from chatsite.errors import Conflict, Forbidden, Gone, InvalidInput, NotFound
from chatsite.forms import add_error
from projects import selectors, services
from projects.forms import InviteForm, InviteLinkForm, ProjectCreateForm
from projects.models import InviteLink, Membership, Project

# The one answer to an invitation, whatever the username (no enumeration).
INVITED_MESSAGE = "If that user exists and is not a member, they have been invited."
# The one answer to someone else's invitation, a missing one and one answered already.
NOT_PENDING_MESSAGE = "That invitation is no longer pending."
# Pending invitations shown on the project list; the API pages through all of them.
LIST_INVITATIONS = 50
# Live invite links shown on a project's page; the API pages through all of them.
LIST_INVITE_LINKS = 50
INVITE_LINK_NOT_FOUND_MESSAGE = "This invite link does not exist. Check that you copied all of it."


def project_for_request(*, request: HttpRequest, slug: str) -> tuple[Project, Membership]:
    """The project and the user's membership, or Http404 (also for non-members)."""
    try:
        return selectors.project_get_for_user(user=request.user, slug=slug)
    except NotFound:
        raise Http404("Project not found.") from None


# What other apps add to a project's page (chat: its rooms and the room form),
# registered from their AppConfig.ready, so projects imports none of them.
PagePart = Callable[..., dict[str, Any]]
_page_parts: list[PagePart] = []


def add_project_page_part(part: PagePart) -> None:
    """Register ``part(request=, project=, membership=)``: its dict joins the page's context."""
    if part not in _page_parts:
        _page_parts.append(part)


def project_page(
    request: HttpRequest,
    *,
    project: Project,
    membership: Membership,
    invite_form: InviteForm | None = None,
    invite_link_form: InviteLinkForm | None = None,
    status: int = 200,
    **bound: Any,
) -> HttpResponse:
    """Render a project's page; forms with errors come back bound (``invite_form``, or a part's, e.g. ``room_form``)."""
    members = list(selectors.project_members(project=project))
    owners = sum(m.role == Membership.Role.OWNER for m in members)
    for m in members:
        # Admins remove others; only an owner removes an owner (projects.services.membership_remove).
        m.removable = (
            membership.is_admin
            and m.user_id != request.user.pk
            and (m.role != Membership.Role.OWNER or membership.role == Membership.Role.OWNER)
        )
    context: dict[str, Any] = {
        "project": project,
        "membership": membership,
        "members": members,
        # The last owner cannot leave, so they get no button for it.
        "can_leave": membership.role != Membership.Role.OWNER or owners > 1,
        "invite_form": (invite_form or InviteForm()) if membership.is_admin else None,
    }
    if membership.is_admin:
        is_owner = membership.role == Membership.Role.OWNER
        context["invite_link_form"] = invite_link_form or InviteLinkForm(allow_admin=is_owner)
        context["invite_links"] = list(
            selectors.invite_links_live(project=project, now=timezone.now())[:LIST_INVITE_LINKS]
        )
    for part in _page_parts:
        context.update(part(request=request, project=project, membership=membership))
    context.update(bound)
    return render(request, "projects/project_detail.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def project_list(request: HttpRequest) -> HttpResponse:
    """GET: the user's projects. POST: create a project (the creator becomes its owner)."""
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(
                user=request.user,
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"] or None,
                description=form.cleaned_data["description"],
            )
        except Conflict as exc:
            add_error(form, exc, field="slug")
        except InvalidInput as exc:
            add_error(form, exc)
        else:
            messages.success(request, f"Project “{project.name}” created.")
            return redirect("project-detail", slug=project.slug)
    projects = selectors.projects_for_user(user=request.user)
    invitations = list(selectors.invitations_for_user(user=request.user)[: LIST_INVITATIONS + 1])
    context = {
        "projects": projects,
        "form": form,
        "invitations": invitations[:LIST_INVITATIONS],
        "more_invitations": len(invitations) > LIST_INVITATIONS,
    }
    return render(request, "projects/project_list.html", context)


@login_required
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project, membership = project_for_request(request=request, slug=slug)
    return project_page(request, project=project, membership=membership)


@login_required
@require_POST
def project_invite(request: HttpRequest, slug: str) -> HttpResponse:
    """Invite someone by username. Admins and owners only (403 for others).

    The page says the same whatever the username (projects.services.invitation_create).
    """
    project, membership = project_for_request(request=request, slug=slug)
    if not membership.is_admin:
        raise PermissionDenied("Only project admins can invite.")
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            services.invitation_create(
                project=project, username=form.cleaned_data["username"], by=request.user, role=form.cleaned_data["role"]
            )
        except Forbidden:
            raise PermissionDenied("Only project admins can invite.") from None
        except ratelimit.RateLimited as exc:
            form.add_error(None, f"Too many invitations; try again in {exc.retry_after} seconds.")
        except InvalidInput as exc:
            add_error(form, exc, field="role")
        else:
            messages.info(request, INVITED_MESSAGE)
            return redirect("project-detail", slug=project.slug)
    return project_page(request, project=project, membership=membership, invite_form=form)


@login_required
@require_POST
def project_leave(request: HttpRequest, slug: str) -> HttpResponse:
    """Leave the project. The last owner cannot: they are sent back with the reason."""
    project, _ = project_for_request(request=request, slug=slug)
    try:
        services.membership_remove(project=project, user=request.user, by=request.user)
    except Conflict as exc:
        messages.error(request, exc.message)
        return redirect("project-detail", slug=project.slug)
    messages.success(request, f"You left {project.name}.")
    return redirect("project-list")


@login_required
@require_POST
def member_remove(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    """Remove a member. Admins and owners (403 for others; only an owner removes an owner)."""
    project, membership = project_for_request(request=request, slug=slug)
    if user_id == request.user.pk:
        return project_leave(request, slug)
    if not membership.is_admin:
        raise PermissionDenied("Only project admins can remove members.")
    try:
        target = selectors.project_member_get(project=project, user_id=user_id)
    except NotFound:
        raise Http404("Member not found.") from None
    try:
        services.membership_remove(project=project, user=target.user, by=request.user)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except (Conflict, NotFound) as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{target.user.username} was removed from {project.name}.")
    return redirect("project-detail", slug=project.slug)


@login_required
@require_POST
def invitation_accept(request: HttpRequest, invitation_id: int) -> HttpResponse:
    """Accept one of the user's invitations and go to the project."""
    try:
        invitation = selectors.invitation_get_for_user(user=request.user, invitation_id=invitation_id)
        membership = services.invitation_accept(invitation=invitation, user=request.user)
    except NotFound:
        # Answered already (a second click), or never the user's: say only that.
        messages.info(request, NOT_PENDING_MESSAGE)
        return redirect("project-list")
    messages.success(request, f"You joined {membership.project.name}.")
    return redirect("project-detail", slug=membership.project.slug)


@login_required
@require_POST
def invitation_decline(request: HttpRequest, invitation_id: int) -> HttpResponse:
    """Decline one of the user's invitations."""
    try:
        invitation = selectors.invitation_get_for_user(user=request.user, invitation_id=invitation_id)
    except NotFound:
        messages.info(request, NOT_PENDING_MESSAGE)
        return redirect("project-list")
    services.invitation_decline(invitation=invitation, user=request.user)
    messages.info(request, f"You declined the invitation to {invitation.project.name}.")
    return redirect("project-list")


# --- Invite links ------------------------------------------------------------------


def _require_link_manager(membership: Membership) -> None:
    if not membership.is_admin:
        raise PermissionDenied("Only project admins can manage invite links.")


@login_required
@require_POST
def invite_link_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Make an invite link and show its URL, once (only its hash is kept). Admins and owners only (403 for others)."""
    project, membership = project_for_request(request=request, slug=slug)
    _require_link_manager(membership)
    form = InviteLinkForm(request.POST, allow_admin=membership.role == Membership.Role.OWNER)
    status = 200
    if form.is_valid():
        hours = form.cleaned_data["expires_in_hours"]
        try:
            link, raw = services.invite_link_create(
                project=project,
                by=request.user,
                role=form.cleaned_data["role"],
                max_uses=form.cleaned_data["max_uses"],
                expires_at=timezone.now() + timedelta(hours=hours) if hours else None,
            )
        except Forbidden:
            raise PermissionDenied("Only project admins can manage invite links.") from None
        except ratelimit.RateLimited as exc:
            form.add_error(None, f"Too many invite links; try again in {exc.retry_after} seconds.")
            status = 429
        except InvalidInput as exc:
            add_error(form, exc)
        else:
            url = request.build_absolute_uri(reverse("invite-link-join", kwargs={"token": raw}))
            response = project_page(
                request, project=project, membership=membership, new_invite_link={"link": link, "url": url}
            )
            # The link's URL is in this page only: no cache may keep it.
            add_never_cache_headers(response)
            return response
    return project_page(request, project=project, membership=membership, invite_link_form=form, status=status)


@login_required
@require_POST
def invite_link_revoke(request: HttpRequest, slug: str, link_id: int) -> HttpResponse:
    """Revoke one of the project's invite links. Admins and owners (403 for others); another project's link is 404."""
    project, membership = project_for_request(request=request, slug=slug)
    _require_link_manager(membership)
    try:
        link = selectors.invite_link_get_for_project(project=project, link_id=link_id)
    except NotFound:
        raise Http404("Invite link not found.") from None
    services.invite_link_revoke(link=link, by=request.user)
    messages.success(request, "Invite link revoked: nobody can join with it any more.")
    return redirect("project-detail", slug=project.slug)


def _join_page(request: HttpRequest, *, token: str, status: int = 200, **context: Any) -> HttpResponse:
    return render(request, "projects/join.html", {"token": token, **context}, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def invite_link_join(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the project an invite link leads to and a Join button (changes nothing). POST: join, then go to the project.

    An unknown token is a 404 page and a link that has ended a 410 page, each
    saying so. Someone already a member is sent to the project; no use is counted.
    """
    if request.method == "POST":
        try:
            membership, joined = services.invite_link_join(token=token, user=request.user)
        except NotFound:
            return _join_page(request, token=token, status=404, problem=INVITE_LINK_NOT_FOUND_MESSAGE)
        except Gone as exc:
            return _join_page(request, token=token, status=410, problem=exc.message)
        project = membership.project
        if joined:
            messages.success(request, f"You joined {project.name}.")
        else:
            messages.info(request, f"You are already a member of {project.name}.")
        return redirect("project-detail", slug=project.slug)
    try:
        link = selectors.invite_link_get_by_token(token=token)
    except NotFound:
        return _join_page(request, token=token, status=404, problem=INVITE_LINK_NOT_FOUND_MESSAGE)
    try:
        _, membership = selectors.project_get_for_user(user=request.user, slug=link.project.slug)
    except NotFound:
        membership = None
    state = link.state_at(timezone.now())
    if membership is None and state != InviteLink.State.ACTIVE:
        return _join_page(request, token=token, status=410, problem=services.invite_link_gone_message(state))
    return _join_page(request, token=token, project=link.project, link=link, membership=membership)
