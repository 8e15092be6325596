"""Event ids: RFC 9562 version 7, standard-library UUIDs, in creation order."""

from __future__ import annotations

import time
import uuid

from broker.domain.ids import uuid7


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
