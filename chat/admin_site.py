"""The Django admin's site: Django's own, with its log-in through the log-in limits (chatsite.login_policy).

Installed as the default site by chatsite.apps.AdminConfig, so
``django.contrib.admin.site`` (and every ``@admin.register``) is this site.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from chat.forms import AdminLoginForm, login_response


class ChatAdminSite(admin.AdminSite):
    """A wrong password for a staff account counts like one on /login/; a refused try is a 429 with the form."""

    login_form = AdminLoginForm

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().login(request, extra_context)
        context = getattr(response, "context_data", None) or {}
        return login_response(response, context.get("form"))
