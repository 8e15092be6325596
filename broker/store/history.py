"""The partner events API: lists, attempts, resend, test deliveries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

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

_SMALLEST_UUID = uuid.UUID(int=0)


def history_page_query(
    partner_id: uuid.UUID,
    *,
    registration_id: uuid.UUID | None,
    event_name: str | None,
    status: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> tuple[str, list[object]]:
    """The query text and arguments of one history page (``sql/queries/events.sql``).

    The text depends only on which filters are present (its shape), never on their values, so
    each shape is one prepared statement whose every predicate is an index condition; its
    generic plan and its custom plans are the same plan.
    """
    args: list[object] = [partner_id, limit]

    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    status_params = [param(s) for s in ([status] if status is not None else EVENT_STATUSES)]
    filters: list[str] = []
    if registration_id is not None:
        filters.append(Q.list_events_registration_filter.format(value=param(registration_id)))
    if event_name is not None:
        filters.append(Q.list_events_event_name_filter.format(value=param(event_name)))
    if created_after is not None:
        filters.append(Q.list_events_created_after_filter.format(value=param(created_after)))
    upper = after
    if created_before is not None:
        # created_at < t is (created_at, id) < (t, the smallest uuid): one bound, one scan start.
        before_key = (created_before, _SMALLEST_UUID)
        upper = before_key if upper is None else min(upper, before_key)
    if upper is not None:
        filters.append(
            Q.list_events_before_filter.format(value=param(upper[0]), value2=param(upper[1]))
        )
    joined = "".join("\n   " + f for f in filters)
    branches = "\nUNION ALL\n".join(
        Q.list_events_branch.format(status=p, filters=joined) for p in status_params
    )
    return Q.list_events.format(branches=branches), args


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
        sql, args = history_page_query(
            partner_id,
            registration_id=registration_id,
            event_name=event_name,
            status=status,
            created_after=created_after,
            created_before=created_before,
            after=after,
            limit=limit,
        )
        return [event_from_row(r) for r in await self.pool.fetch(sql, *args)]

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
