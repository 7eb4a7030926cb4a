"""Every write to projects, memberships, invitations and invite links."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from chatsite import ratelimit
from chatsite.errors import Conflict, Forbidden, Gone, InvalidInput, NotFound
from projects.models import Invitation, InviteLink, Membership, Project
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


def _membership_add(*, project: Project, user: AbstractBaseUser, role: str) -> tuple[Membership, bool]:
    """The one way people join a project (an accepted invitation, an invite link): ``(membership, created)``.

    A membership made meanwhile another way (the admin) keeps its role. A
    plain save, so chat.signals' post_save hooks drop the user's cached
    access and room list on commit.
    """
    return Membership.objects.get_or_create(project=project, user=user, defaults={"role": role})


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
    membership, _ = _membership_add(project=pending.project, user=user, role=pending.role)
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


# --- Invite links -------------------------------------------------------------

INVITE_LINK_MAX_USES = 10_000
INVITE_LINK_MAX_LIFETIME = timedelta(days=365)
# 24 random bytes: 192 bits, far beyond guessing, as 32 URL-safe characters.
INVITE_LINK_TOKEN_BYTES = 24


def _require_link_minter(*, project: Project, user: AbstractBaseUser, role: str) -> None:
    membership = _require_admin(project=project, user=user)
    if role not in INVITABLE_ROLES:
        raise InvalidInput("Role must be 'admin' or 'member'.")
    # An admin link makes admins who can make more; only owners hand that out.
    if role == Membership.Role.ADMIN and membership.role != Membership.Role.OWNER:
        raise Forbidden("Only project owners can make links that join as admin.")


@transaction.atomic
def invite_link_create(
    *,
    project: Project,
    by: AbstractBaseUser,
    role: str = Membership.Role.MEMBER,
    max_uses: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[InviteLink, str]:
    """Make an invite link to ``project``: returns ``(link, raw_token)``; only the token's hash is stored.

    Project owners and admins only (NotFound for non-members, Forbidden for
    members); only owners make ``admin`` links. ``max_uses`` is 1 to
    INVITE_LINK_MAX_USES or None (no limit); ``expires_at`` is in the future
    and within INVITE_LINK_MAX_LIFETIME, or None (never). Counts against the
    maker's ``invite_link`` rate limit once the checks pass.
    """
    _require_link_minter(project=project, user=by, role=role)
    if max_uses is not None and not 1 <= max_uses <= INVITE_LINK_MAX_USES:
        raise InvalidInput(f"max_uses must be between 1 and {INVITE_LINK_MAX_USES}, or empty for no limit.")
    now = timezone.now()
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            raise InvalidInput("expires_at needs a time zone.")
        if not now < expires_at <= now + INVITE_LINK_MAX_LIFETIME:
            raise InvalidInput("expires_at must be in the future and at most a year away.")
    ratelimit.hit("invite_link", by.pk)
    raw = secrets.token_urlsafe(INVITE_LINK_TOKEN_BYTES)
    link = InviteLink.objects.create(
        project=project,
        token_hash=InviteLink.hash_token(raw),
        role=role,
        max_uses=max_uses,
        expires_at=expires_at,
        created_by=by,
    )
    return link, raw


@transaction.atomic
def invite_link_revoke(*, link: InviteLink, by: AbstractBaseUser) -> InviteLink:
    """Revoke ``link``: it stops working at once. Project owners and admins only; revoking twice is harmless.

    The link is kept (revoked), so its uses stay visible in the project's list.
    """
    _require_admin(project=link.project, user=by)
    InviteLink.objects.filter(pk=link.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    link.refresh_from_db(fields=["revoked_at"])
    return link


_GONE_MESSAGES = {
    InviteLink.State.REVOKED: "This invite link has been revoked.",
    InviteLink.State.EXPIRED: "This invite link has expired.",
    InviteLink.State.USED_UP: "This invite link has been used as many times as it allows.",
}


def invite_link_gone_message(state: str) -> str:
    """What people are told about a link that has ended in ``state`` (revoked, expired, used_up)."""
    return _GONE_MESSAGES[state]


@transaction.atomic
def invite_link_join(*, token: str, user: AbstractBaseUser) -> tuple[Membership, bool]:
    """Join the project of the invite link with ``token`` as ``user``: ``(membership, joined)``.

    The link's row is locked first, so joins through one link take turns:
    with ``max_uses`` N exactly N people get in, however many try at once.
    Someone already a member (a double click, a second visit) gets their
    membership back, ``joined`` False, and no use is counted, whatever the
    link's state. Otherwise NotFound for an unknown token and Gone (code
    ``revoked``, ``expired`` or ``used_up``) for a link that has ended. A
    pending invitation of the user to the project is answered by the join
    (deleted). The membership goes through the one writer (_membership_add),
    so its cache hooks run as for an accepted invitation.
    """
    link = (
        InviteLink.objects.select_related("project")
        .select_for_update(of=("self",))
        .filter(token_hash=InviteLink.hash_token(token or ""))
        .first()
    )
    if link is None:
        raise NotFound("Invite link not found.")
    existing = Membership.objects.select_related("project").filter(project=link.project, user=user).first()
    if existing is not None:
        return existing, False
    state = link.state_at(timezone.now())
    if state != InviteLink.State.ACTIVE:
        raise Gone(invite_link_gone_message(state), code=state)
    InviteLink.objects.filter(pk=link.pk).update(uses=F("uses") + 1)
    membership, _ = _membership_add(project=link.project, user=user, role=link.role)
    Invitation.objects.filter(project=link.project, user=user).delete()
    return membership, True
