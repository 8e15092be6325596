"""The partner events API: lists, attempts, resend, test deliveries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

from broker.domain.ids import first_id_after, first_id_at_or_after
from broker.domain.models import (
    Attempt,
    Event,
)
from broker.domain.states import EVENT_STATUSES, Status
from broker.store.base import StoreBase
from broker.store.queries import Q
from broker.store.records import (
    attempt_from_row,
    event_from_row,
)
from broker.store.stats import AttemptToRoll, add_rollups


def history_page_query(
    partner_id: uuid.UUID,
    *,
    registration_id: uuid.UUID | None,
    event_name: str | None,
    status: str | None,
    day: tuple[uuid.UUID, uuid.UUID | None],
    ids_from: uuid.UUID | None,
    ids_before: uuid.UUID | None,
    limit: int,
) -> tuple[str, list[object]]:
    """The query text and arguments of one history page over the ids of a run of day
    partitions (``day``: its first id and the first id after it, or None for today and after)
    that are in [ids_from, ids_before) (``sql/queries/events.sql``).

    The text depends only on which filters are present (its shape) and on the day, never on
    their values, so each is one prepared statement whose every predicate is an index
    condition; its generic plan and its custom plans are the same plan. The days' bounds are
    literals, so even a generic plan holds those days' partitions alone: a plan of every
    partition of a month costs more to make than the page costs to read, and a generic plan
    over all of them was measured choosing primary-key scans that read whole days.
    """
    args: list[object] = [partner_id, limit]

    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    def literal(value: uuid.UUID) -> str:
        return f"'{value}'"  # a uuid's text: hex digits and hyphens only

    status_params = [param(s) for s in ([status] if status is not None else EVENT_STATUSES)]
    filters: list[str] = []
    if registration_id is not None:
        filters.append(Q.list_events_registration_filter.format(value=param(registration_id)))
    if event_name is not None:
        filters.append(Q.list_events_event_name_filter.format(value=param(event_name)))
    day_from, day_before = day
    # A window's id is its first event object's, made just before the others: the windows of
    # these event objects are in these days or the one before.
    windows = [
        Q.list_events_from_filter.format(value=literal(_days_before(day_from, 1))),
    ]
    filters.append(Q.list_events_from_filter.format(value=literal(day_from)))
    if day_before is not None:
        bound = Q.list_events_before_filter.format(value=literal(day_before))
        filters.append(bound)
        windows.append(bound)
    if ids_from is not None:
        filters.append(Q.list_events_from_filter.format(value=param(ids_from)))
    if ids_before is not None:
        filters.append(Q.list_events_before_filter.format(value=param(ids_before)))
    joined = "".join("\n   " + f for f in filters)
    branches = "\nUNION ALL\n".join(
        Q.list_events_branch.format(status=p, filters=joined) for p in status_params
    )
    return Q.list_events.format(branches=branches, windows_filters=" ".join(windows)), args


def _days_before(first_id: uuid.UUID, days: int) -> uuid.UUID:
    return uuid.UUID(int=max(first_id.int - ((days * _DAY_MS) << 80), 0))


_DAY_MS = 86_400_000


def _day_start(day: date) -> uuid.UUID:
    return first_id_at_or_after(datetime(day.year, day.month, day.day, tzinfo=UTC))


async def _spans(
    today: date, older_days: AsyncIterator[date]
) -> AsyncIterator[tuple[uuid.UUID, uuid.UUID | None]]:
    """The id ranges a page walks, newest first: today and after (ids made ahead of the
    database clock included), then the older days that have a partition (read from the
    catalog only once reached) in runs of 1, 2, 4, 8... days. A sparse filter then walks a
    month in six queries, not thirty; each range's text holds for a whole day, so its plan is
    made once and reused (measured: one query per day made a new statement text per day and
    shape, which the statement cache could not hold)."""
    yield _day_start(today), None
    days = [day async for day in older_days]
    run = 1
    while days:
        chunk, days = days[:run], days[run:]
        yield _day_start(chunk[-1]), _day_start(chunk[0] + timedelta(days=1))
        run *= 2


# Connectivity tests are history only: never queued, never resent.
TEST_EVENT = "test.event"


class HistoryQueries(StoreBase):
    async def list_events(
        self,
        partner_id: uuid.UUID,
        *,
        registration_id: uuid.UUID | None,
        event_name: str | None,
        status: str | None,
        created_after: datetime | None,
        created_before: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Event]:
        # Time bounds are id bounds (created_at is the id's millisecond, migration 0011), and
        # the cursor's (created_at, id) position is its id.
        lower = None if created_after is None else first_id_after(created_after)
        upper = None if after is None else after[1]
        if created_before is not None:
            before = first_id_at_or_after(created_before)
            upper = before if upper is None else min(upper, before)
        found: list[Event] = []
        async with self.pool.acquire() as conn:
            # A few day partitions per query (_spans), newest first, until the page is full: a
            # query over every day of the retention period spends more planning its
            # partitions than reading the page.
            today = datetime.now(UTC).date()  # the day of the ids this process makes

            async def older_days() -> AsyncIterator[date]:
                for row in await conn.fetch(Q.history_days_before, today):
                    yield row["day"]

            async for day_from, day_before in _spans(today, older_days()):
                if lower is not None and day_before is not None and day_before <= lower:
                    break  # this day and every older one are before createdAfter
                if upper is not None and upper <= day_from:
                    continue  # after the cursor or createdBefore
                sql, args = history_page_query(
                    partner_id,
                    registration_id=registration_id,
                    event_name=event_name,
                    status=status,
                    day=(day_from, day_before),
                    ids_from=lower if lower is not None and lower > day_from else None,
                    ids_before=upper
                    if upper is not None and (day_before is None or upper < day_before)
                    else None,
                    limit=limit - len(found),
                )
                found += [event_from_row(r) for r in await conn.fetch(sql, *args)]
                if len(found) >= limit:
                    break
        return found

    async def get_event(self, event_id: uuid.UUID, partner_id: uuid.UUID) -> Event | None:
        row = await self.pool.fetchrow(Q.get_event, event_id, partner_id)
        return None if row is None else event_from_row(row)

    async def list_attempts(self, event_id: uuid.UUID) -> list[Attempt]:
        return [attempt_from_row(r) for r in await self.pool.fetch(Q.list_attempts, event_id)]

    async def resend_event(self, event_id: uuid.UUID, partner_id: uuid.UUID) -> Event | None:
        """A new round of attempts, due now (None when its registration is Deleted).

        A test delivery is not queued (it stays as it was); the event of a Suspended or Paused
        registration is Pending again and waits in the queue until restart or unpause."""
        async with self.pool.acquire() as conn, conn.transaction():
            event = await conn.fetchrow(Q.get_event, event_id, partner_id)
            if event is None:
                return None
            await conn.fetch(Q.lock_registrations_of_events, [event_id])
            requeued = await conn.fetch(Q.requeue_event, [event_id], datetime.now(UTC))
            if requeued:
                await conn.execute(Q.notify_events)
                event = await conn.fetchrow(Q.get_event, event_id, partner_id)
            elif event["event_name"] != TEST_EVENT:
                return None  # its registration is Deleted
        return event_from_row(event)

    async def record_test_delivery(
        self,
        *,
        event_id: uuid.UUID,
        partner_id: uuid.UUID,
        registration_id: uuid.UUID,
        success: bool,
        attempt: Attempt,
    ) -> tuple[Event, Status | None]:
        """The recorded test event, and the status its registration moved to (a failure that
        reached the registration's suspendAfterConsecutiveFailures), else None."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                Q.insert_test_event,
                event_id,
                partner_id,
                registration_id,
                "Success" if success else "Failed",
                attempt.attempted_at,
            )
            outcome = await conn.fetchrow(Q.record_test_outcome, registration_id, success)
            # After record_test_outcome locked the registration (the flush's lock order) and before
            # the attempt row (add_rollups skips attempts already recorded).
            await add_rollups(
                conn,
                [
                    AttemptToRoll(
                        registration_id=registration_id,
                        event_id=event_id,
                        attempt_number=attempt.attempt_number,
                        attempted_at=attempt.attempted_at,
                        duration_ms=attempt.duration_ms,
                        success=success,
                    )
                ],
            )
            await conn.execute(
                Q.insert_attempts,
                [event_id],
                [attempt.attempt_number],
                [attempt.attempted_at],
                [attempt.duration_ms],
                [attempt.response_status],
                [attempt.error],
                [attempt.response_body],
            )
        moved = None
        if outcome is not None and outcome["was"] != outcome["status"]:
            moved = Status(outcome["status"])
        return event_from_row(row), moved
