"""Reads of API tokens: the user a bearer token names, and a user's own tokens.

Anyone else's token is NotFound, the same answer as a missing one.
"""

from __future__ import annotations

from typing import Any

from chat.cache_keys import token_cache_key
from chat.models import ApiToken
from chatsite.errors import NotFound
from perf import cache as perf_cache


def user_for_token(*, raw_key: str) -> Any | None:
    """The active user owning the bearer token ``raw_key``, or None.

    Cached by token hash (family ``tokens``: the user, or a miss marker);
    dropped when the token is deleted or its user is saved (chat.signals).
    """
    return users_for_tokens(raw_keys=[raw_key])[0]


def users_for_tokens(*, raw_keys: list[str]) -> list[Any | None]:
    """:func:`user_for_token` for many tokens: one cache round trip for all (sockets that connect together)."""
    hashes = [ApiToken.hash_key(raw) if raw else None for raw in raw_keys]
    keys = {token_cache_key(h): "tokens" for h in hashes if h is not None}
    found = perf_cache.get_many_counted(keys) if keys else {}
    users: list[Any | None] = []
    for key_hash in hashes:
        if key_hash is None:
            users.append(None)
            continue
        key = token_cache_key(key_hash)
        if key not in found:
            token = (
                ApiToken.objects.select_related("user")
                .only("id", "user__id", "user__username", "user__first_name", "user__last_name", "user__is_active", "user__is_staff", "user__is_superuser")
                .filter(key_hash=key_hash)
                .first()
            )
            found[key] = token.user if token is not None and token.user.is_active else None
            perf_cache.store(key, found[key], family="tokens")
        user = found[key]
        users.append(None if user is None or user == perf_cache.NONE else user)
    return users


# Largest id a bigint holds: a larger one names no token (and PostgreSQL would refuse it).
TOKEN_ID_MAX = 2**63 - 1


def tokens_for_user(*, user: Any, before: int | None = None, limit: int) -> list[ApiToken]:
    """The user's own API tokens, newest first: up to ``limit`` with an id below ``before``.

    Never cached; the key hash is not loaded.
    """
    tokens = ApiToken.objects.filter(user=user).only("id", "user_id", "name", "created_at", "last_used_at")
    if before is not None and before <= TOKEN_ID_MAX:  # every id is below a larger one
        tokens = tokens.filter(id__lt=before)
    return list(tokens.order_by("-id")[:limit])


def token_get_for_user(*, user: Any, token_id: int) -> ApiToken:
    """One of the user's own tokens; NotFound for an id that is missing or anyone else's (the same answer)."""
    token = None
    if 0 < token_id <= TOKEN_ID_MAX:
        token = ApiToken.objects.filter(user=user, id=token_id).first()
    if token is None:
        raise NotFound("Token not found.")
    return token


def token_get_by_key_for_user(*, user: Any, raw_key: str) -> ApiToken | None:
    """The user's own token whose raw key is ``raw_key``, or None."""
    if not raw_key:
        return None
    return ApiToken.objects.filter(user=user, key_hash=ApiToken.hash_key(raw_key)).first()
