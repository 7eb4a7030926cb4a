"""What every JSON API list and endpoint shares: the page cursor, field selection, input text, page size and error shapes.

The apps' routers (chat.api, projects.api) build on these; chatsite.api mounts them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import orjson
from django.conf import settings
from ninja import Field, Schema
from pydantic import AfterValidator, StrictStr, create_model

from chatsite.errors import InvalidInput

# Largest value of a PostgreSQL bigint: ids in cursors never exceed it.
MAX_ID = 2**63 - 1
# Cursors we issue are a few dozen characters; anything much longer is not ours.
CURSOR_MAX_LENGTH = 512


# --- Cursors --------------------------------------------------------------


def page_cursor_encode(position: Mapping[str, Any]) -> str:
    """The opaque ``next_cursor`` for a list position: URL-safe base64 of compact JSON."""
    return base64.urlsafe_b64encode(orjson.dumps(dict(position))).rstrip(b"=").decode("ascii")


def invalid_cursor() -> InvalidInput:
    return InvalidInput("The cursor is not valid; start again without it.", code="invalid_cursor")


def page_cursor_decode(cursor: str, *, fields: Mapping[str, type]) -> dict[str, Any]:
    """Decode a cursor made by page_cursor_encode.

    Every key must be one of ``fields`` with that type (``int`` means a
    non-negative integer that fits a bigint, never a bool). Which keys must be
    present is the caller's rule. Raises InvalidInput (``invalid_cursor``) for
    anything that is not a cursor we could have issued.
    """
    if not cursor or len(cursor) > CURSOR_MAX_LENGTH:
        raise invalid_cursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise invalid_cursor() from None
    if not isinstance(data, dict) or not data:
        raise invalid_cursor()
    for key, value in data.items():
        expected = fields.get(key)
        if expected is None:
            raise invalid_cursor()
        if expected is int:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
                raise invalid_cursor()
        elif not isinstance(value, expected) or (isinstance(value, str) and "\x00" in value):
            raise invalid_cursor()
    return data


def page_cursor_key(cursor: str | None, *, key: str, kind: type) -> Any:
    """The position in a single-key cursor (``{key: value}``), or None without a cursor."""
    if cursor is None:
        return None
    position = page_cursor_decode(cursor, fields={key: kind})
    if key not in position:
        raise invalid_cursor()
    return position[key]


# --- Field selection ------------------------------------------------------

# Longest ``fields`` value worth parsing: every field of the widest item, twice over.
FIELDS_MAX_LENGTH = 512


def invalid_fields(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_fields")


def fields_parse(raw: str | None, *, schema: type[Schema]) -> tuple[str, ...] | None:
    """The item fields named by ``?fields=a,b`` (in the item's own order), or None for all.

    Names are top-level fields of ``schema``; an unknown name is a 400
    ``invalid_fields`` that names it and lists the valid ones.
    """
    if raw is None:
        return None
    allowed = tuple(schema.model_fields)
    if len(raw) > FIELDS_MAX_LENGTH:
        raise invalid_fields("'fields' is too long.")
    names = {name.strip() for name in raw.split(",")} - {""}
    if not names:
        raise invalid_fields(f"'fields' names no field; choose from: {', '.join(allowed)}.")
    unknown = sorted(names.difference(allowed))
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise invalid_fields(f"Unknown field{'s' if len(unknown) > 1 else ''} {listed}; choose from: {', '.join(allowed)}.")
    return tuple(name for name in allowed if name in names)


def fields_select(items: Iterable[Mapping[str, Any]], fields: tuple[str, ...] | None) -> list[Any]:
    """``items`` with only ``fields`` (all of them for None)."""
    if fields is None:
        return list(items)
    return [{name: item[name] for name in fields} for item in items]


def selectable(schema: type[Schema], *, name: str) -> type[Schema]:
    """``schema`` for list items that ``?fields=`` may trim.

    Every field keeps its type but may be absent. List endpoints render with
    ``exclude_unset=True``, so a field left out is missing from the JSON, not null.
    """
    definitions: dict[str, Any] = {
        field: (info.annotation, Field(None, description=info.description))
        for field, info in schema.model_fields.items()
    }
    return create_model(name, __base__=Schema, __doc__=schema.__doc__, **definitions)


# --- Input ----------------------------------------------------------------


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here, naming the field, rather than fail on insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every string the API accepts: a JSON string (no coercion from numbers) without NUL.
Text = Annotated[StrictStr, AfterValidator(_no_nul)]


class PageQuery(Schema):
    cursor: str | None = Field(None, description="The `next_cursor` of the previous page.")
    limit: int | None = Field(
        None, ge=1, description="Page size: default 50; values above 100 are treated as 100."
    )
    fields: str | None = Field(
        None, description="Comma-separated item fields to return, e.g. `id,body,author`; all when omitted."
    )


def page_position(cursor: str | None, after: int | None) -> tuple[int | None, int | None]:
    """(before, after) from a page cursor or the ``after`` parameter.

    A backward cursor ``{"b": id}`` pages to ids below the oldest id already
    seen; a forward cursor ``{"a": id}`` to ids above the newest.
    """
    if cursor is None:
        return None, after
    if after is not None:
        raise InvalidInput("Send either 'cursor' or 'after', not both.", code="invalid_cursor")
    position = page_cursor_decode(cursor, fields={"b": int, "a": int})
    if len(position) != 1:
        raise invalid_cursor()
    return position.get("b"), position.get("a")


def page_limit(limit: int | None) -> int:
    """Clamp a requested page size to [1, CHAT_PAGE_SIZE_MAX]; None means the default."""
    if limit is None:
        return settings.CHAT_PAGE_SIZE
    return max(1, min(int(limit), settings.CHAT_PAGE_SIZE_MAX))


# --- Output ---------------------------------------------------------------


class ErrorOut(Schema):
    detail: str
    code: str


class ValidationErrorOut(ErrorOut):
    errors: list[dict[str, Any]]


class RateLimitedOut(ErrorOut):
    retry_after: int


# The error statuses an authenticated endpoint documents.
ERROR_RESPONSES: dict[int, Any] = {
    400: ErrorOut,
    401: ErrorOut,
    403: ErrorOut,
    404: ErrorOut,
    409: ErrorOut,
    413: ErrorOut,
    422: ValidationErrorOut,
    429: RateLimitedOut,
    503: ErrorOut,
}


class UserOut(Schema):
    id: int
    username: str
    display_name: str
