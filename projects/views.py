"""Project pages: the project list with its create form, and a project's page.

Views are thin: they validate the form, call one selector or service, and
render or redirect. A project the user may not see answers 404 whether or not
it exists (projects.selectors.project_get_for_user).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from chat import selectors as chat_selectors
from chat.forms import RoomCreateForm, add_chat_error
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from projects import selectors, services
from projects.forms import InviteForm, ProjectCreateForm
from projects.models import Membership, Project


def project_for_request(*, request: HttpRequest, slug: str) -> tuple[Project, Membership]:
    """The project and the user's membership, or Http404 (also for non-members)."""
    try:
        return selectors.project_get_for_user(user=request.user, slug=slug)
    except NotFound:
        raise Http404("Project not found.") from None


def project_page(
    request: HttpRequest,
    *,
    project: Project,
    membership: Membership,
    invite_form: InviteForm | None = None,
    room_form: RoomCreateForm | None = None,
) -> HttpResponse:
    """Render a project's page; the forms are passed back bound when they had errors."""
    context = {
        "project": project,
        "membership": membership,
        "rooms": chat_selectors.rooms_for_user(user=request.user, project=project),
        "members": selectors.project_members(project=project),
        "invite_form": (invite_form or InviteForm()) if membership.is_admin else None,
        "room_form": room_form or RoomCreateForm(),
    }
    return render(request, "projects/project_detail.html", context)


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
            add_chat_error(form, exc, field="slug")
        except InvalidInput as exc:
            add_chat_error(form, exc)
        else:
            messages.success(request, f"Project “{project.name}” created.")
            return redirect("project-detail", slug=project.slug)
    projects = selectors.projects_for_user(user=request.user)
    return render(request, "projects/project_list.html", {"projects": projects, "form": form})


@login_required
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project, membership = project_for_request(request=request, slug=slug)
    return project_page(request, project=project, membership=membership)


@login_required
@require_POST
def project_invite(request: HttpRequest, slug: str) -> HttpResponse:
    """Add an existing user to the project. Admins and owners only (403 for others)."""
    project, membership = project_for_request(request=request, slug=slug)
    if not membership.is_admin:
        raise PermissionDenied("Only project admins can invite.")
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            added = services.membership_add(
                project=project, username=form.cleaned_data["username"], by=request.user, role=form.cleaned_data["role"]
            )
        except Forbidden:
            raise PermissionDenied("Only project admins can invite.") from None
        except (NotFound, Conflict, InvalidInput) as exc:
            add_chat_error(form, exc, field="username")
        else:
            messages.success(request, f"{added.user.username} was added to {project.name}.")
            return redirect("project-detail", slug=project.slug)
    return project_page(request, project=project, membership=membership, invite_form=form)
