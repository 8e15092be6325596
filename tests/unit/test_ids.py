"""Event ids: RFC 9562 version 7, standard-library UUIDs, in creation order."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

from broker.domain.ids import format_time, uuid7


def test_uuid7_is_a_standard_version_7_uuid_carrying_the_time():
    before = time.time_ns() // 1_000_000
    made = uuid7()
    after = time.time_ns() // 1_000_000
    assert type(made) is uuid.UUID  # asyncpg and pydantic take it as is
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_ids_made_in_one_millisecond_stay_in_order():
    made = [uuid7() for _ in range(20000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_times_are_rfc3339_utc_with_milliseconds_and_z():
    paris = timezone(timedelta(hours=1))
    assert format_time(datetime(2018, 7, 26, 3, 48, 55, 969999, tzinfo=UTC)) == (
        "2018-07-26T03:48:55.969Z"
    )
    assert format_time(datetime(2020, 1, 1, 5, 0, 0, 123456, tzinfo=paris)) == (
        "2020-01-01T04:00:00.123Z"
    )
    assert format_time(datetime(2020, 1, 1, tzinfo=UTC)) == "2020-01-01T00:00:00.000Z"
    # RFC 3339's year is always four digits
    assert format_time(datetime(999, 1, 1, tzinfo=UTC)) == "0999-01-01T00:00:00.000Z"
    assert format_time(None) is None
