"""Forms of the chat pages. They validate input only; writes happen in chat.services."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError
from django.http import HttpResponse

from chatsite import login_policy
from chatsite.ratelimit import RateLimited


class SignupForm(UserCreationForm):
    """Username and password rules come from UserCreationForm; the names are optional."""

    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "first_name", "last_name")


class LimitedLoginMixin:
    """AuthenticationForm's check of the credentials, through the log-in limits (chatsite.login_policy).

    A refused try is a form-wide error naming the wait; ``rate_limited``
    keeps it for :func:`login_response` to turn the page into a 429.
    """

    rate_limited: RateLimited | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")  # type: ignore[attr-defined]
        password = self.cleaned_data.get("password")  # type: ignore[attr-defined]
        if username is not None and password:
            try:
                self.user_cache = login_policy.login_authenticate(self.request, username=username, password=password)  # type: ignore[attr-defined]
            except RateLimited as exc:
                self.rate_limited = exc
                raise ValidationError(exc.message, code="rate_limited") from None
            if self.user_cache is None:
                raise self.get_invalid_login_error()  # type: ignore[attr-defined]
            self.confirm_login_allowed(self.user_cache)  # type: ignore[attr-defined]
        return self.cleaned_data  # type: ignore[attr-defined]


class LoginForm(LimitedLoginMixin, AuthenticationForm):
    """The form of /login/."""


class AdminLoginForm(LimitedLoginMixin, AdminAuthenticationForm):
    """The form of /admin/login/ (staff accounts only, as Django's own)."""


def login_response(response: HttpResponse, form: Any) -> HttpResponse:
    """A log-in page's response: 429 with Retry-After when ``form`` was refused by the limits."""
    refused = getattr(form, "rate_limited", None)
    if refused is not None:
        response.status_code = 429
        response["Retry-After"] = str(refused.retry_after)
    return response


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. the program that uses it.")


class RoomCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    topic = forms.CharField(max_length=250, required=False)
    is_private = forms.BooleanField(required=False, label="Private (only invited people can read it)")


class RoomMemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)


class DmCreateForm(forms.Form):
    """The people of a new direct message, by username; the service checks who they are."""

    users = forms.CharField(
        max_length=1200, label="People", help_text="Usernames, separated by commas or spaces (up to 8 people)."
    )

    def clean_users(self) -> list[str]:
        names = [name.removeprefix("@") for name in re.split(r"[\s,]+", self.cleaned_data["users"])]
        names = [name for name in names if name]
        if not names:
            raise ValidationError("Name at least one person.")
        return names


class ProfileForm(forms.Form):
    """A display name is the first and last name together; without them, people see the username."""

    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(max_length=254, required=False, help_text="Where e-mails of unread mentions and direct messages go.")

