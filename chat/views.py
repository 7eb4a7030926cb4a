"""Chat pages: sign-up, log-in, API tokens, room creation and the room page.

Views are thin: validate the form, call the selector or service, render or
redirect. A room the user may not read answers 404 whether or not it exists
(chat.selectors.rooms.room_get_by_slug_for_user); that includes private rooms of the
user's own project.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.views import LoginView
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import get_conditional_response, patch_cache_control
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods, require_POST

from chat.forms import (
    DmCreateForm,
    LoginForm,
    ProfileForm,
    RoomCreateForm,
    RoomMemberAddForm,
    SignupForm,
    TokenCreateForm,
    login_response,
)
from chat import files
from chat.models import Room, RoomMute
from chat.selectors import dms as dm_selectors
from chat.selectors import history as history_selectors
from chat.selectors import notifications as notification_selectors
from chat.selectors import rooms as room_selectors
from chat.selectors import tokens as token_selectors
from chat.selectors import uploads as upload_selectors
from chat.services import accounts as account_services
from chat.services import dms as dm_services
from chat.services import notifications as notification_services
from chat.services import rooms as room_services
from chatsite import login_policy, ratelimit
from chatsite.errors import Conflict, Forbidden, InvalidInput, NotFound
from chatsite.forms import add_error
from chatsite.users import user_display_name
from projects.models import Membership, Project
from perf import cache as perf_cache
from perf.static import release_fingerprint
from projects.views import project_for_request, project_page

MODERATOR_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


def _too_many(exc: ratelimit.RateLimited) -> str:
    return f"Too many attempts; try again in {exc.retry_after} seconds."


class RateLimitedLoginView(LoginView):
    """Django's login page, through the log-in limits (chatsite.login_policy) like the admin login and the token API.

    Side effect: a wrong password counts against the policy's counters. A try
    the policy refuses is not checked: the page answers 429 with the form and
    the wait.
    """

    template_name = "registration/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form: Any) -> HttpResponse:
        return login_response(super().form_invalid(form), form)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and log it in. Side effect: a new user and a session.

    Sign-up attempts count against the ``login_ip`` limit of the client address
    (chatsite.login_policy.signup_attempt).
    """
    next_url = _signup_next(request)
    if request.user.is_authenticated:
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST":
        try:
            login_policy.signup_attempt(request)
        except ratelimit.RateLimited as exc:
            context = {"form": SignupForm(), "rate_limited": exc.message, "next": next_url}
            return render(request, "registration/signup.html", context, status=429)
    if request.method == "POST" and form.is_valid():
        try:
            user = account_services.user_create(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                first_name=form.cleaned_data["first_name"],
                last_name=form.cleaned_data["last_name"],
            )
        except IntegrityError:
            # Someone took the name between validation and insert.
            form.add_error("username", "A user with that username already exists.")
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome, {user.username}!")
            return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


def _signup_next(request: HttpRequest) -> str:
    """Where to go after signing up (``next``, as the login page has it), when it is a page of this site."""
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return next_url if safe else ""


def _room_for_request(*, request: HttpRequest, project: Project, room_slug: str) -> Room:
    try:
        return room_selectors.room_get_by_slug_for_user(user=request.user, project=project, slug=room_slug)
    except NotFound:
        raise Http404("Room not found.") from None


def project_page_rooms(*, request: HttpRequest, project: Project, membership: Membership) -> dict[str, Any]:
    """Chat's part of a project's page (projects.views.add_project_page_part): the rooms and DMs the user sees, and their forms."""
    rooms, dms = dm_selectors.rooms_split(room_selectors.rooms_for_user(user=request.user, project=project))
    return {
        "rooms": rooms,
        "dms": dm_selectors.dms_with_people(user=request.user, dms=dms),
        "room_form": RoomCreateForm(),
        "dm_form": DmCreateForm(),
    }


@login_required
@require_POST
def room_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Create a room in the project (any member); its creator joins it.

    Counts against the user's ``room_create`` limit, as the API does.
    """
    project, membership = project_for_request(request=request, slug=slug)
    form = RoomCreateForm(request.POST)
    if form.is_valid():
        try:
            ratelimit.hit("room_create", request.user.pk)
            room = room_services.room_create(
                project=project,
                user=request.user,
                name=form.cleaned_data["name"],
                topic=form.cleaned_data["topic"],
                is_private=form.cleaned_data["is_private"],
            )
        except ratelimit.RateLimited as exc:
            form.add_error(None, _too_many(exc))
        except (Conflict, InvalidInput, Forbidden) as exc:
            add_error(form, exc, field="name" if isinstance(exc, Conflict) else None)
        else:
            return redirect("room-detail", slug=project.slug, room_slug=room.slug)
    return project_page(request, project=project, membership=membership, room_form=form)


@login_required
@require_POST
def dm_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Start a direct message with the people named (or find the one that exists) and go to it.

    Errors come back on the project page's form. Creating counts against the
    user's ``room_create`` limit, as the API does; finding does not.
    """
    project, membership = project_for_request(request=request, slug=slug)
    form = DmCreateForm(request.POST)
    if form.is_valid():
        try:
            room, _ = dm_services.dm_get_or_create(project=project, by=request.user, users=form.cleaned_data["users"])
        except ratelimit.RateLimited as exc:
            form.add_error(None, _too_many(exc))
        except (Conflict, InvalidInput, NotFound, Forbidden) as exc:
            add_error(form, exc, field="users")
        else:
            return redirect("room-detail", slug=project.slug, room_slug=room.slug)
    return project_page(request, project=project, membership=membership, dm_form=form)


def room_page(request: HttpRequest, *, project: Project, room: Room, member_form: RoomMemberAddForm | None = None) -> HttpResponse:
    """Render the room page and move the viewer's read marker to the newest message shown.

    Side effect: chat.services.rooms.room_mark_read (the marker only moves forward).
    """
    page_size = settings.CHAT_PAGE_SIZE
    history = history_selectors.room_history(room=room, limit=page_size)
    _attach_reactions(history)
    if history:
        room_services.room_mark_read(room=room, user=request.user, last_read_message_id=history[-1].id)
    # After marking read, so the current room's badge is already cleared.
    rooms, dms = dm_selectors.rooms_split(room_selectors.rooms_for_user(user=request.user, project=project))
    dms = dm_selectors.dms_with_people(user=request.user, dms=dms)
    is_dm = room.kind == Room.Kind.DM
    if is_dm:
        listed = next((d for d in dms if d.id == room.id), None) or dm_selectors.dms_with_people(user=request.user, dms=[room])[0]
        # A DM is shown by its people as this viewer sees them, wherever the page names the room.
        room.people, room.name = listed.people, listed.title
    can_moderate = room.my_role in MODERATOR_ROLES
    config: dict[str, Any] = {
        "room": room.id,
        "room_slug": room.slug,
        "project": project.slug,
        "user": {
            "id": request.user.id,
            "username": request.user.get_username(),
            "display_name": user_display_name(request.user),
        },
        # Every listed room and DM: the socket follows them for the sidebar's live badges.
        "other_rooms": [r.id for r in (*rooms, *dms) if r.id != room.id],
        "my_role": room.my_role,
        "has_older": len(history) >= page_size,
        "page_size": page_size,
        "max_length": settings.CHAT_MESSAGE_MAX_LENGTH,
        "upload_max_bytes": settings.CHAT_UPLOAD_MAX_BYTES,
        "muted": notification_selectors.room_muted(user=request.user, room_id=room.id),
        "login_url": reverse(settings.LOGIN_URL),
        # Rooms the page learns of live (a new DM): their URL is this one with their slug.
        "room_url": reverse("room-detail", kwargs={"slug": project.slug, "room_slug": "__room__"}),
        "api": reverse("api:api-root"),
    }
    context = {
        "project": project,
        "room": room,
        "rooms": rooms,
        "dms": dms,
        "history": history,
        "can_moderate": can_moderate,
        # A DM's people are fixed (chat.services.dms): no member list to add to.
        "member_form": (member_form or RoomMemberAddForm()) if room.is_private and not is_dm else None,
        "room_members": room_selectors.room_members(room=room) if room.is_private and not is_dm else (),
        "chat_config": config,
    }
    history_digest = _history_digest(history)
    etag = _room_page_etag(request, context, history_digest) if request.method == "GET" else None
    if etag is not None:
        not_modified = get_conditional_response(request, etag=etag)
        if not_modified is not None:
            return _revalidate(not_modified, etag)
    # Only for a page that is sent: a 304 needs no message list.
    context["messages_html"] = _message_list_html(request.user, history, can_moderate, history_digest)
    return _revalidate(render(request, "chat/room_detail.html", context), etag)


def _attach_reactions(history: list[Any]) -> None:
    """Give each message its reaction summary (``m.reaction_summary``), with the first names, and its thread's
    (``m.thread_summary``): a query and a profile lookup each.

    What the viewer reacted with is marked by chat.js from ``user_ids``, so
    the rendered list stays the same for every reader.
    """
    reactions = history_selectors.messages_reactions(message_ids=[m.id for m in history])
    threads = history_selectors.thread_summaries(root_ids=[m.id for m in history])
    for m in history:
        m.reaction_summary = reactions.get(m.id, [])
        m.thread_summary = threads.get(m.id)


def _digest(data: Any) -> str:
    return hashlib.blake2b(repr(data).encode(), digest_size=16).hexdigest()


def _history_digest(history: list[Any]) -> str:
    """A digest of every field of the message list the page shows."""
    return _digest(
        [
            (m.id, m.seq, m.author_id, m.author.username, m.author.first_name, m.author.last_name,
             m.body, m.created_at, m.edited_at, m.deleted_at, getattr(m, "reaction_summary", None),
             getattr(m, "thread_summary", None))
            for m in history
        ]
    )  # fmt: skip


def _message_list_html(user: Any, history: list[Any], can_moderate: bool, history_digest: str) -> str:
    """The rendered message list (chat/_message_list.html), a cached fragment (family ``fragments``).

    Rendering 50 messages is the template's main cost. The key is a digest of
    every field the list shows plus the templates' release, so a new message,
    an edit, a delete or an author's rename makes a new key by itself (the old
    one ages out by TTL). The list varies by viewer only in the "mine" marks
    and the edit/delete buttons, so viewers share variants: an author of any
    listed message gets their own, moderators share one, everyone else
    another.
    """
    authored = any(m.author_id == user.id for m in history)
    viewer = f"user{user.id}" if authored else ("moderator" if can_moderate else "reader")
    key = perf_cache.cache_key("fragment", "room_messages", viewer, _digest((release_fingerprint(), history_digest)))
    html = perf_cache.cached(
        "fragments",
        key,
        lambda: render_to_string(
            "chat/_message_list.html", {"history": history, "user": user, "can_moderate": can_moderate}
        ),
    )
    return mark_safe(html)  # rendered by the template engine, which escaped what it inserted


def _room_page_etag(request: HttpRequest, context: dict[str, Any], history_digest: str) -> str | None:
    """The room page's ETag: a digest of everything the template reads, or None.

    Computed after the queries and before rendering, so a repeat visit to an
    unchanged room skips the template (about half of the page's time) and the
    bytes. Nothing the page shows can change without changing the digest:
    message bodies and edit/delete times, author names, the room list with
    unread counts, the DM list with its people and unread counts, the members
    of a private room, the viewer, the CSRF secret
    the page's tokens are made from, and the templates and static file names
    (release_fingerprint). None, so no 304, while flash messages are waiting.
    Anything per-request the page ever embeds (a CSP nonce, say) must join
    the digest or turn the ETag off: a 304 keeps the old body.
    """
    if len(messages.get_messages(request)):
        return None
    get_token(request)  # the page embeds tokens made from this secret; make sure it exists
    user, room = request.user, context["room"]
    members = context["room_members"] = list(context["room_members"])
    data = (
        release_fingerprint(),
        request.META["CSRF_COOKIE"],
        (user.pk, user.get_username(), user.first_name, user.last_name),
        (context["project"].slug, context["project"].name),
        (room.id, room.slug, room.name, room.topic, room.is_private, room.kind, room.my_role),
        [(r.id, r.slug, r.name, r.is_private, r.unread) for r in context["rooms"]],
        [(d.id, d.slug, d.title, d.unread, [tuple(p.values()) for p in d.people]) for d in context["dms"]],
        history_digest,
        [(u.pk, u.username, u.first_name, u.last_name) for u in members],
        context["can_moderate"],
        context["chat_config"],
    )
    return '"%s"' % _digest(data)


def _revalidate(response: HttpResponse, etag: str | None) -> HttpResponse:
    """Per-user page: browsers may keep it but must ask again each time; shared caches must not keep it."""
    if etag is not None:
        response.headers["ETag"] = etag
        patch_cache_control(response, private=True, no_cache=True)
    return response


@login_required
def room_detail(request: HttpRequest, slug: str, room_slug: str) -> HttpResponse:
    project, _ = project_for_request(request=request, slug=slug)
    room = _room_for_request(request=request, project=project, room_slug=room_slug)
    return room_page(request, project=project, room=room)


@login_required
@require_POST
def room_member_add(request: HttpRequest, slug: str, room_slug: str) -> HttpResponse:
    """Add a project member to a private room (room members and project admins)."""
    project, _ = project_for_request(request=request, slug=slug)
    room = _room_for_request(request=request, project=project, room_slug=room_slug)
    if not room.is_private or room.kind == Room.Kind.DM:
        raise Http404("Public rooms and direct messages have no member list.")
    form = RoomMemberAddForm(request.POST)
    if form.is_valid():
        try:
            member = room_services.room_member_add(room=room, username=form.cleaned_data["username"], by=request.user)
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None
        except (NotFound, InvalidInput, Conflict) as exc:
            add_error(form, exc, field="username")
        else:
            messages.success(request, f"{member.user.username} can now read #{room.name}.")
            return redirect("room-detail", slug=project.slug, room_slug=room.slug)
    return room_page(request, project=project, room=room, member_form=form)


@login_required
@require_POST
def room_leave(request: HttpRequest, slug: str, room_slug: str) -> HttpResponse:
    """Leave a private room: its page and events end for you at once; back to the project."""
    project, _ = project_for_request(request=request, slug=slug)
    room = _room_for_request(request=request, project=project, room_slug=room_slug)
    try:
        room_services.room_member_remove(room=room, user=request.user, by=request.user)
    except (Forbidden, NotFound, Conflict) as exc:
        messages.error(request, exc.message)
        return redirect("room-detail", slug=project.slug, room_slug=room.slug)
    messages.success(request, f"You left #{room.name}.")
    return redirect("project-detail", slug=project.slug)


# --- API tokens -------------------------------------------------------------


def _token_page(request: HttpRequest, *, form: TokenCreateForm, created: Any = None, status: int = 200) -> HttpResponse:
    """The tokens page, newest first, a page at a time (``?before=<id>`` continues below that id)."""
    before = request.GET.get("before", "")
    page_size = settings.CHAT_PAGE_SIZE
    tokens = token_selectors.tokens_for_user(
        user=request.user, before=int(before) if before.isascii() and before.isdigit() else None, limit=page_size + 1
    )
    context = {
        "tokens": tokens[:page_size],
        "older": tokens[page_size - 1].id if len(tokens) > page_size else None,
        "form": form,
        "created": created,
    }
    response = render(request, "account/tokens.html", context, status=status)
    if created is not None:
        # The raw key is in this page only: no cache may keep it.
        patch_cache_control(response, no_store=True)
    return response


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The signed-in user's API tokens; a POST creates one and shows its key, once.

    Creating counts against the user's ``token`` limit, as POST /api/v1/auth/token does.
    """
    if request.method == "GET":
        return _token_page(request, form=TokenCreateForm())
    form = TokenCreateForm(request.POST)
    if form.is_valid():
        try:
            ratelimit.hit("token", request.user.pk)
            token, raw = account_services.token_create(user=request.user, name=form.cleaned_data["name"])
        except ratelimit.RateLimited as exc:
            form.add_error(None, _too_many(exc))
            return _token_page(request, form=form, status=429)
        except InvalidInput as exc:
            add_error(form, exc, field="name")
        else:
            return _token_page(request, form=TokenCreateForm(), created={"token": token, "raw": raw})
    return _token_page(request, form=form)


@login_required
@require_POST
def token_revoke(request: HttpRequest) -> HttpResponse:
    """Revoke one of the signed-in user's tokens (form field ``token``: its id); 404 for any other id."""
    raw_id = request.POST.get("token", "")
    try:
        if not (raw_id.isascii() and raw_id.isdigit()):
            raise NotFound("Token not found.")
        token = token_selectors.token_get_for_user(user=request.user, token_id=int(raw_id))
    except NotFound:
        raise Http404("Token not found.") from None
    account_services.token_revoke(token=token, by=request.user)
    messages.success(request, f"Token '{token.name}' revoked: programs using it can no longer sign in with it.")
    return redirect("account-tokens")


@login_required
def file_download(request: HttpRequest, upload_id: int, name: str) -> HttpResponse:
    """A shared file, for readers of its room (404 for everyone else, as a missing file)."""
    return _file(request, upload_id, thumbnail=False)


@login_required
def file_thumbnail(request: HttpRequest, upload_id: int) -> HttpResponse:
    """An image's thumbnail (404 until the background worker has made it)."""
    return _file(request, upload_id, thumbnail=True)


def _file(request: HttpRequest, upload_id: int, *, thumbnail: bool) -> HttpResponse:
    try:
        upload = upload_selectors.upload_get_for_user(user=request.user, upload_id=upload_id)
    except NotFound:
        raise Http404("File not found.") from None
    return files.file_response(upload, thumbnail=thumbnail)


QUIET_HOURS = {"1", "8", "24", "168"}


@login_required
@require_http_methods(["GET", "POST"])
def notification_settings(request: HttpRequest) -> HttpResponse:
    """The signed-in user's notification settings: the digest, do not disturb, muted rooms (unmute here)."""
    saved = False
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "unmute":
            raw = request.POST.get("room", "")
            if raw.isascii() and raw.isdigit():
                RoomMute.objects.filter(user=request.user, room_id=int(raw)).delete()
        elif action == "settings":
            quiet = request.POST.get("quiet", "keep")
            changes: dict[str, Any] = {"digest": request.POST.get("digest") == "on"}
            if quiet == "off":
                changes["quiet_until"] = None
            elif quiet in QUIET_HOURS:
                changes["quiet_until"] = timezone.now() + timedelta(hours=int(quiet))
            notification_services.notification_settings_update(user=request.user, **changes)
        saved = True
    current = notification_selectors.notification_settings_get(user=request.user)
    muted = RoomMute.objects.filter(user=request.user).select_related("room__project").order_by("room__project__name", "room__name")
    return render(
        request,
        "account/notifications.html",
        {
            "settings": current,
            "quiet": current.quiet_until is not None and current.quiet_until > timezone.now(),
            "muted": muted,
            "saved": saved,
            "digest_delay": settings.CHAT_DIGEST_DELAY // 60,
        },
    )


@login_required
@require_POST
def room_mute_toggle(request: HttpRequest, slug: str, room_slug: str) -> HttpResponse:
    """Mute or unmute a room from its page (``muted`` = "1" or "0"), then back to the room."""
    project, _ = project_for_request(request=request, slug=slug)
    room = _room_for_request(request=request, project=project, room_slug=room_slug)
    if request.POST.get("muted") == "1":
        notification_services.room_mute(user=request.user, room=room)
    else:
        notification_services.room_unmute(user=request.user, room=room)
    return redirect("room-detail", slug=slug, room_slug=room_slug)


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    """The signed-in user's display name and e-mail address (where digests go)."""
    user = request.user
    form = ProfileForm(request.POST or None, initial={"first_name": user.first_name, "last_name": user.last_name, "email": user.email})
    if request.method == "POST" and form.is_valid():
        try:
            account_services.user_update_profile(user=user, **form.cleaned_data)
        except InvalidInput as exc:
            add_error(form, exc, field="email" if exc.code == "invalid_email" else None)
        else:
            messages.success(request, "Profile saved.")
            return redirect("account-profile")
    return render(request, "account/profile.html", {"form": form})

