"""Admin for projects, memberships, pending invitations and invite links.

Projects are created through the app (projects.services.project_create makes
the owner membership and the "general" room), so the admin has no "add
project" button; it edits names, descriptions, archiving and memberships.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from projects.models import Invitation, InviteLink, Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("user", "role", "joined_at")
    readonly_fields = ("joined_at",)
    autocomplete_fields = ("user",)
    # A project of a thousand members would make a page nobody can use; the
    # Membership changelist (filtered by project) is the place for those.
    max_num = 200
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("user")


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_by", "created_at", "archived")
    list_select_related = ("created_by",)
    list_filter = ("archived",)
    search_fields = ("name", "slug")
    date_hierarchy = "created_at"
    ordering = ("name",)
    autocomplete_fields = ("created_by",)
    readonly_fields = ("created_at",)
    show_full_result_count = False
    inlines = (MembershipInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_inlines(self, request: HttpRequest, obj: Project | None) -> Any:
        # Only inline the member list while it stays small enough to edit.
        if obj is not None and Membership.objects.filter(project=obj).count() > MembershipInline.max_num:
            return ()
        return self.inlines


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "user", "role", "joined_at")
    list_select_related = ("project", "user")
    list_filter = ("role",)
    search_fields = ("=user__username", "=project__slug")
    autocomplete_fields = ("project", "user")
    readonly_fields = ("joined_at",)
    ordering = ("-id",)
    show_full_result_count = False


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Pending invitations; people join by accepting them in the app."""

    list_display = ("id", "project", "user", "role", "invited_by", "created_at")
    list_select_related = ("project", "user", "invited_by")
    list_filter = ("role",)
    search_fields = ("=user__username", "=project__slug", "=invited_by__username")
    autocomplete_fields = ("project", "user", "invited_by")
    readonly_fields = ("created_at",)
    ordering = ("-id",)
    show_full_result_count = False


@admin.register(InviteLink)
class InviteLinkAdmin(admin.ModelAdmin):
    """Invite links, to look at (and delete). They are made in the app, which shows the link once; the hash is never shown."""

    list_display = ("id", "project", "role", "uses", "max_uses", "expires_at", "revoked_at", "state", "created_by", "created_at")
    list_select_related = ("project", "created_by")
    list_filter = ("role",)
    search_fields = ("=project__slug", "=created_by__username")
    fields = ("project", "role", "uses", "max_uses", "expires_at", "revoked_at", "state", "created_by", "created_at")
    readonly_fields = fields
    ordering = ("-id",)
    show_full_result_count = False

    @admin.display(description="state")
    def state(self, obj: InviteLink) -> str:
        return obj.state_at(timezone.now())

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A link made here could never be shown: the app makes them and shows the URL once.
        return False

    def has_change_permission(self, request: HttpRequest, obj: InviteLink | None = None) -> bool:
        return False
