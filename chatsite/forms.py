"""What every app's page forms share."""

from __future__ import annotations

from django import forms

from chatsite.errors import ChatError


def add_error(form: forms.Form, error: ChatError, *, field: str | None = None) -> None:
    """Show a service error on ``form``: on ``field`` when given, else as a form-wide error."""
    form.add_error(field, error.message)
