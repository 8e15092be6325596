"""Keyset pages: the ``limit`` and ``cursor`` query parameters, and the ``nextCursor`` answered.

A cursor is the opaque (createdAt, id) of a page's last row. Microsecond precision is kept (not
the API's milliseconds) so the next page starts exactly after that row, and rows inserted
meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from broker.api.schema import PAGE_DEFAULT, PAGE_MAX
from broker.domain.errors import FieldError

Position = tuple[datetime, uuid.UUID]
PAGE_PARAMS = frozenset({"limit", "cursor"})


class Row(Protocol):
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> uuid.UUID: ...


def page_of(rows: Sequence[Row], limit: int) -> dict[str, Any]:
    """``{"data", "next_cursor"}`` from ``limit + 1`` rows fetched: the extra row says whether a
    next page exists, without counting."""
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "data": page,
        "next_cursor": encode_cursor(page[-1].created_at, page[-1].id) if more else None,
    }


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, ident = raw.partition("|")
        when = datetime.fromisoformat(moment)
        if when.tzinfo is None:
            return None
        # In UTC here, so an out-of-range instant is refused now, not by the database driver.
        return when.astimezone(UTC), uuid.UUID(ident)
    except (binascii.Error, ValueError, UnicodeDecodeError, OverflowError):
        return None


def page_limit(query: Mapping[str, str], errors: list[FieldError]) -> int:
    """The ``limit`` query parameter (PAGE_DEFAULT when absent)."""
    raw = query.get("limit")
    if raw is None:
        return PAGE_DEFAULT
    # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= PAGE_MAX:
        errors.append(FieldError(field="limit", message=f"must be an integer from 1 to {PAGE_MAX}"))
        return PAGE_DEFAULT
    return int(raw)


def page_cursor(query: Mapping[str, str], errors: list[FieldError]) -> Position | None:
    """The ``cursor`` query parameter: None for the first page."""
    raw = query.get("cursor")
    if raw is None:
        return None
    after = decode_cursor(raw)
    if after is None:
        errors.append(FieldError(field="cursor", message="is not a cursor this API issued"))
    return after


def query_errors(query: Mapping[str, str], allowed: frozenset[str]) -> list[FieldError]:
    """Unknown and repeated query parameters (``?status=A&status=B`` is not an OR: refuse)."""
    errors: list[FieldError] = []
    getall = getattr(query, "getall", None)
    for key in dict.fromkeys(query):
        if key not in allowed:
            errors.append(FieldError(field=key, message="unknown query parameter"))
        elif getall is not None and len(getall(key)) > 1:
            errors.append(FieldError(field=key, message="must be given at most once"))
    return errors
