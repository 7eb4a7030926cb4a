"""Forms of the chat pages. They validate input only; writes happen in chat.services."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from chatsite.errors import ChatError


class SignupForm(UserCreationForm):
    """Username and password rules come from UserCreationForm; the names are optional."""

    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "first_name", "last_name")


class RoomCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    topic = forms.CharField(max_length=250, required=False)
    is_private = forms.BooleanField(required=False, label="Private (only invited people can read it)")


class RoomMemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)


def add_chat_error(form: forms.Form, error: ChatError, *, field: str | None = None) -> None:
    """Show a service error on ``form``: on ``field`` when given, else as a form-wide error."""
    form.add_error(field, error.message)
