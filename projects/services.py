"""Every write to projects and memberships."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from projects.models import Membership, Project

User = get_user_model()

# Cache entries of projects and memberships are invalidated by the model
# hooks in chat.signals on every save and delete (these services and the
# admin alike).


def _clean_name(name: str, *, what: str, max_length: int = 100) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidInput(f"{what} name must not be empty.")
    if len(name) > max_length:
        raise InvalidInput(f"{what} name is longer than {max_length} characters.")
    if "\x00" in name:
        raise InvalidInput(f"{what} name must not contain NUL characters.")
    return name


def _clean_slug(slug: str | None, *, name: str, what: str) -> str:
    slug = slugify(slug if slug else name)[:64]
    if not slug:
        raise InvalidInput(f"{what} slug must contain letters or digits.")
    return slug


@transaction.atomic
def project_create(*, user: AbstractBaseUser, name: str, slug: str | None = None, description: str = "") -> Project:
    """Create a project owned by ``user``, with a public room "general".

    The creator becomes the owner. Raises Conflict when the slug is taken.
    """
    from chat.services import room_create

    name = _clean_name(name, what="Project")
    slug = _clean_slug(slug, name=name, what="Project")
    if len(description) > 2000 or "\x00" in description:
        raise InvalidInput("Project description must be at most 2000 characters, without NUL characters.")
    try:
        with transaction.atomic():
            project = Project.objects.create(slug=slug, name=name, description=description, created_by=user)
    except IntegrityError:
        raise Conflict(f"A project with slug '{slug}' already exists.", code="slug_taken") from None
    Membership.objects.create(project=project, user=user, role=Membership.Role.OWNER)
    room_create(project=project, user=user, name="general", topic="Everything and anything")
    return project


@transaction.atomic
def project_update(
    *, project: Project, by: AbstractBaseUser, name: str | None = None, description: str | None = None
) -> Project:
    """Rename or describe a project. Project admins and owners only."""
    _require_admin(project=project, user=by)
    fields = []
    if name is not None:
        project.name = _clean_name(name, what="Project")
        fields.append("name")
    if description is not None:
        project.description = description
        fields.append("description")
    if fields:
        project.save(update_fields=fields)
    return project


def _require_admin(*, project: Project, user: AbstractBaseUser) -> Membership:
    membership = Membership.objects.filter(project=project, user=user).first()
    if membership is None:
        raise NotFound("Project not found.")
    if not membership.is_admin:
        raise Forbidden("Only project admins can do that.")
    return membership


@transaction.atomic
def membership_add(
    *, project: Project, username: str, by: AbstractBaseUser, role: str = Membership.Role.MEMBER
) -> Membership:
    """Invite an existing user to ``project``. Project admins and owners only.

    Raises NotFound for an unknown username and Conflict when already a member.
    """
    _require_admin(project=project, user=by)
    if role not in (Membership.Role.ADMIN, Membership.Role.MEMBER):
        raise InvalidInput("Role must be 'admin' or 'member'.")
    user = User.objects.filter(username=(username or "").strip()).first()
    if user is None:
        raise NotFound(f"No user named '{username}'.", code="user_not_found")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(project=project, user=user, role=role)
    except IntegrityError:
        raise Conflict(f"'{user.username}' is already a member.", code="already_member") from None
    return membership


@transaction.atomic
def membership_remove(*, project: Project, user: AbstractBaseUser, by: AbstractBaseUser) -> None:
    """Remove ``user`` from the project (admins, or the user leaving). The last owner cannot leave."""
    from chat.models import RoomMember

    if by.pk != user.pk:
        _require_admin(project=project, user=by)
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    if membership is None:
        raise NotFound("Not a member.")
    if membership.role == Membership.Role.OWNER and not Membership.objects.filter(
        project=project, role=Membership.Role.OWNER
    ).exclude(pk=membership.pk).exists():
        raise Conflict("The last owner cannot leave the project.", code="last_owner")
    membership.delete()
    RoomMember.objects.filter(room__project=project, user=user).delete()
