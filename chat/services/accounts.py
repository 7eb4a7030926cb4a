"""Writes of users and their API tokens (issue and revoke).

Caches: a user's cached profile and token lookups are dropped by model hooks
(chat.signals) on every save and delete, whichever code made it.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from chat.models import ApiToken
from chatsite.errors import InvalidInput, NotFound

User = get_user_model()


def user_create(*, username: str, password: str, first_name: str = "", last_name: str = "", is_staff: bool = False) -> Any:
    """Create an active user. Validation (password rules, unique name) is the form's or caller's."""
    return User.objects.create_user(
        username=username,
        password=password,
        first_name=first_name,
        last_name=last_name,
        is_staff=is_staff,
        is_superuser=is_staff,
    )


@transaction.atomic
def user_update_profile(
    *, user: Any, first_name: str | None = None, last_name: str | None = None, email: str | None = None
) -> Any:
    """Change a user's display name or e-mail address (where digests go; "" for none).

    Invalidates the cached profile (and so every cached message's author).
    """
    fields = []
    for name, value in (("first_name", first_name), ("last_name", last_name)):
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 150 or "\x00" in value:
            raise InvalidInput(f"{name} must be a string of at most 150 characters.", code="invalid_name")
        setattr(user, name, value.strip())
        fields.append(name)
    if email is not None:
        if not isinstance(email, str) or len(email) > 254:
            raise InvalidInput("That is not an e-mail address.", code="invalid_email")
        email = email.strip()
        if email:
            try:
                validate_email(email)
            except ValidationError:
                raise InvalidInput("That is not an e-mail address.", code="invalid_email") from None
        user.email = email
        fields.append("email")
    if fields:
        user.save(update_fields=fields)  # chat.signals drops the cached profile and token lookups
    return user


TOKEN_NAME_MAX = 100


def token_create(*, user: Any, name: str = "api") -> tuple[ApiToken, str]:
    """Issue a bearer token named ``name`` (blank: "api"). Returns ``(token, raw_key)``; only the hash is stored.

    The raw key exists only in the return value: it can be shown once.
    InvalidInput (``invalid_name``) for a name over 100 characters or with NUL.
    """
    if not isinstance(name, str) or "\x00" in name or len(name.strip()) > TOKEN_NAME_MAX:
        raise InvalidInput(f"The token name must be text of at most {TOKEN_NAME_MAX} characters.", code="invalid_name")
    raw = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name.strip() or "api", key_hash=ApiToken.hash_key(raw))
    return token, raw


@transaction.atomic
def token_revoke(*, token: ApiToken, by: Any) -> None:
    """Delete ``token``: only its owner may (NotFound for anyone else, the answer for a missing token).

    Every revocation comes here. A plain ``delete()``, so the post_delete
    receivers of chat.signals run: the token's cached lookup is dropped after
    commit, and the token stops working at the next request.
    """
    if token.user_id != by.pk:
        raise NotFound("Token not found.")
    token.delete()
