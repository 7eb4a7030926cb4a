"""Every write to projects, memberships and invitations."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils.text import slugify

from chatsite import ratelimit
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from projects.models import Invitation, Membership, Project
from projects.signals import project_created

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
    """Create a project owned by ``user`` and announce it (projects.signals.project_created).

    The creator becomes the owner; chat answers the announcement with the
    public room "general". Raises Conflict when the slug is taken.
    """
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
    project_created.send(sender=Project, project=project, user=user)
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


INVITABLE_ROLES = (Membership.Role.ADMIN, Membership.Role.MEMBER)


@transaction.atomic
def invitation_create(
    *, project: Project, username: str, by: AbstractBaseUser, role: str = Membership.Role.MEMBER
) -> None:
    """Invite the user named ``username`` to ``project`` with ``role``. Project admins and owners only.

    Returns nothing and raises nothing that depends on ``username``: when no
    active user has it, or they are already a member or already invited
    (that invitation keeps its role), nothing happens. Every call that passes
    the permission and role checks counts against the inviter's ``invite``
    rate limit, whatever it did, so the limit tells nothing either.
    """
    _require_admin(project=project, user=by)
    if role not in INVITABLE_ROLES:
        raise InvalidInput("Role must be 'admin' or 'member'.")
    ratelimit.hit("invite", by.pk)
    invitee = User.objects.filter(username=(username or "").strip(), is_active=True).first()
    if invitee is None or Membership.objects.filter(project=project, user=invitee).exists():
        return
    # ON CONFLICT DO NOTHING: an earlier (or concurrent) invitation stays as it is.
    Invitation.objects.bulk_create(
        [Invitation(project=project, user=invitee, role=role, invited_by=by)], ignore_conflicts=True
    )


def _require_invitee(*, invitation: Invitation, user: AbstractBaseUser) -> None:
    # Someone else's invitation answers like a missing one.
    if invitation.user_id != user.pk:
        raise NotFound("Invitation not found.")


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: AbstractBaseUser) -> Membership:
    """Accept ``invitation`` as its invitee: join the project with the invited role; the invitation is deleted.

    Idempotent: a second accept (a double click, two racing requests) waits
    for the first on the invitation's row lock and returns the membership it
    made. Raises NotFound for someone else's invitation, as for a missing
    one. The new membership's cache entries are invalidated on commit by the
    model hooks in chat.signals.
    """
    _require_invitee(invitation=invitation, user=user)
    pending = (
        Invitation.objects.select_related("project")
        .select_for_update(of=("self",))
        .filter(pk=invitation.pk, user=user)
        .first()
    )
    if pending is None:
        membership = (
            Membership.objects.select_related("project").filter(project_id=invitation.project_id, user=user).first()
        )
        if membership is None:
            raise NotFound("Invitation not found.")
        return membership
    # A membership made meanwhile another way (the admin) keeps its role.
    membership, _ = Membership.objects.get_or_create(
        project=pending.project, user=user, defaults={"role": pending.role}
    )
    pending.delete()
    return membership


@transaction.atomic
def invitation_decline(*, invitation: Invitation, user: AbstractBaseUser) -> None:
    """Decline ``invitation`` as its invitee: it is deleted; the inviter is not told.

    Declining twice is harmless. Raises NotFound for someone else's
    invitation, as for a missing one.
    """
    _require_invitee(invitation=invitation, user=user)
    Invitation.objects.filter(pk=invitation.pk, user=user).delete()


@transaction.atomic
def membership_remove(*, project: Project, user: AbstractBaseUser, by: AbstractBaseUser) -> None:
    """Remove ``user`` from the project: an admin or owner removing someone, or the user leaving.

    Only an owner can remove an owner, and the last owner can neither leave
    nor be removed (Conflict ``last_owner``). Deleting the membership is the
    announcement: chat's receivers end the user's private-room memberships in
    the project and invalidate what they cached (chat.signals).
    """
    remover = None if by.pk == user.pk else _require_admin(project=project, user=by)
    # The owners are locked with the leaver, in one order, so two owners
    # leaving at once cannot both see the other one stay.
    locked = list(
        Membership.objects.select_for_update()
        .filter(Q(user=user) | Q(role=Membership.Role.OWNER), project=project)
        .order_by("pk")
    )
    membership = next((m for m in locked if m.user_id == user.pk), None)
    if membership is None:
        raise NotFound("Member not found.")
    if membership.role == Membership.Role.OWNER:
        if remover is not None and remover.role != Membership.Role.OWNER:
            raise Forbidden("Only an owner can remove an owner.")
        if not any(m.role == Membership.Role.OWNER and m.pk != membership.pk for m in locked):
            raise Conflict("The last owner cannot leave the project.", code="last_owner")
    membership.delete()
