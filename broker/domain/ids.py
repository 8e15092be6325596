"""Identifiers and timestamps as the contract spells them."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

from uuid_utils.compat import uuid7 as _uuid7


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), as a standard-library ``uuid.UUID``.

    Event ids are inserted at high rates; time-ordered ids keep the primary-key index appending at
    its right edge instead of splitting random pages. uuid-utils also keeps ids made within one
    millisecond in order (RFC 9562's counter method), which random bits alone did not.
    """
    return _uuid7()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _milliseconds(moment: datetime) -> tuple[int, bool]:
    """Whole milliseconds since the epoch, rounded down, and whether ``moment`` is exactly one."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return micros // 1000, micros % 1000 == 0


def _uuid7_floor(ms: int) -> uuid.UUID:
    """The smallest uuid whose uuid7 time is millisecond ``ms`` (clamped to what 48 bits
    hold: a bound in year 1 or 9999 is before or after every id)."""
    if ms >= 1 << 48:
        return uuid.UUID(int=(1 << 128) - 1)
    return uuid.UUID(int=max(ms, 0) << 80)


def first_id_at_or_after(moment: datetime) -> uuid.UUID:
    """The smallest uuid7 made at ``moment`` or later.

    Event objects' ``created_at`` is their uuid7 id's millisecond (migration 0011), so
    ``created_at >= moment`` is ``id >= first_id_at_or_after(moment)`` and ``created_at <
    moment`` is ``id < first_id_at_or_after(moment)``.
    """
    ms, exact = _milliseconds(moment)
    return _uuid7_floor(ms if exact else ms + 1)


def first_id_after(moment: datetime) -> uuid.UUID:
    """The smallest uuid7 made after ``moment``: ``created_at > moment`` is ``id >=`` this."""
    ms, _ = _milliseconds(moment)
    return _uuid7_floor(ms + 1)


def uuid7_at(moment: datetime) -> uuid.UUID:
    """A uuid7 made at ``moment`` (its millisecond, then random bits): for history made in
    bulk, in tests and benches, and for ids of a given day partition."""
    ms, _ = _milliseconds(moment)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62)
    return uuid.UUID(int=value | (rand & ((1 << 62) - 1)))


def uuid7_time(value: uuid.UUID) -> datetime:
    """The creation time a uuid7 carries (its millisecond)."""
    return _EPOCH + timedelta(milliseconds=value.int >> 80)


def parse_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return None


def format_time(moment: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds and ``Z``: ``2018-07-26T03:48:55.969Z``.

    Every delivery body formats two of these: ``isoformat`` is 2.4x faster than ``strftime``
    (1.3 against 3.2 us), and its year always has the four digits RFC 3339 asks for."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp; naive times are refused (ambiguous)."""
    if not isinstance(text, str) or "T" not in text.upper():
        raise ValueError("must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z")
    normalized = text.strip()
    if normalized[-1] in "zZ":
        normalized = normalized[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(normalized)
    except ValueError:
        raise ValueError("must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("must carry a time zone (Z or +hh:mm)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise ValueError("is out of the supported range") from None


def utcnow() -> datetime:
    return datetime.now(UTC)
