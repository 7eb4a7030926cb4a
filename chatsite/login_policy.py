"""The one log-in limit policy: /login/, /admin/login/ and POST /api/v1/auth/token all go through it.

Failed log-ins are counted (successes are not) in three fixed windows
(chatsite.ratelimit, settings ``RATE_LIMITS``):

* ``login_pair``: per account and client address;
* ``login_ip``: per client address, across accounts (sign-up attempts count
  here too);
* ``login_account``: per account, across addresses; the highest of the three.

Before the password is checked, a try is refused (RateLimited: 429 with
Retry-After) when its pair or its address has used up its limit, or when the
account has used up its limit *and* this address already failed for this
account in the pair's window. So an account under attack from many addresses
still takes a try from an address that has not failed for it: the owner's
right password from their own address works, and distributed guessing gets
one try per fresh address per window (docs/SECURITY.md, "Login limits").
"""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import quote

from django.contrib.auth import authenticate
from django.http import HttpRequest

from chatsite import ratelimit

# Django's username field holds at most this many characters: longer names
# cannot exist, so they need no counter of their own.
USERNAME_MAX = 150


def login_account(username: str) -> str:
    """The account part of a counter's key: case- and width-folded, so variants of a name share it.

    Quoted so that no name can contain the key's separators.
    """
    folded = unicodedata.normalize("NFKC", username).strip().casefold()[:USERNAME_MAX]
    return quote(folded, safe="@+")


def _pair(account: str, address: str) -> str:
    return f"{account}|{address}"


def too_many(retry_after: int) -> ratelimit.RateLimited:
    return ratelimit.RateLimited(f"Too many attempts; try again in {retry_after} seconds.", retry_after=retry_after)


def login_usage(*, username: str, address: str) -> tuple[ratelimit.Usage | None, ...]:
    """The ``(pair, address, account)`` failure counters of a log-in try, read in one round trip without counting."""
    account = login_account(username)
    return tuple(
        ratelimit.usage(("login_pair", _pair(account, address)), ("login_ip", address), ("login_account", account))
    )


def login_check(*, username: str, address: str) -> None:
    """Raise RateLimited when a log-in try for ``username`` from ``address`` must be refused unchecked.

    Counts nothing.
    """
    pair, ip, per_account = login_usage(username=username, address=address)
    refusing = [usage for usage in (pair, ip) if usage is not None and usage.exhausted]
    if per_account is not None and per_account.exhausted and pair is not None and pair.count > 0:
        refusing.append(per_account)
    if refusing:
        raise too_many(max(usage.retry_after for usage in refusing))


def login_failed(*, username: str, address: str) -> None:
    """Count one failed log-in against the pair, the address and the account."""
    account = login_account(username)
    ratelimit.record("login_pair", _pair(account, address))
    ratelimit.record("login_ip", address)
    ratelimit.record("login_account", account)


def login_authenticate(request: HttpRequest | None, *, username: str, password: str) -> Any | None:
    """Check the limits, then the password: the user, or None for wrong credentials (counted as a failure).

    Raises RateLimited, without checking the password, when the policy refuses
    the try. An inactive account answers None like a wrong password, and counts.
    """
    address = ratelimit.client_ip(request.META) if request is not None else "unknown"
    login_check(username=username, address=address)
    user = authenticate(request, username=username, password=password)
    if user is None:
        login_failed(username=username, address=address)
    return user


def signup_attempt(request: HttpRequest) -> None:
    """Count a sign-up attempt against the client address (``login_ip``); raise RateLimited past it."""
    try:
        ratelimit.hit("login_ip", ratelimit.client_ip(request.META))
    except ratelimit.RateLimited as exc:
        raise too_many(exc.retry_after) from None
