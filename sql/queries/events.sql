-- The partner events API and housekeeping of event history.

-- name: list_events
-- One page of history, newest first. The store builds one query text per filter shape (which
-- filters are present) from the list_events_* blocks, so every predicate in it is an index
-- condition: no "$n IS NULL OR ..." that a generic plan (used by a prepared statement after
-- five runs) cannot drop. The page is a UNION ALL of one list_events_branch per status asked
-- for (the one given, or all three), each with the list_events_*_filter blocks of the shape.
-- Merge Append interleaves the branches in (created_at, id) order, reading about $2 rows in
-- all, each branch from the index that begins with its equality filters:
--   partner + status                      -> events_partner_status_created
--   partner + event name + status         -> events_partner_name_status_created
--   partner + registration + status       -> events_partner_registration_status_created
--   partner + registration + name + status -> events_partner_registration_name_status_created
-- The upper bound is the page cursor's (created_at, id) or createdBefore as (createdBefore, the
-- smallest uuid), whichever is lower: the store merges the two so the scan starts at one key.
-- $1 partner, $2 rows to return; further parameters are numbered by the store.
SELECT id, partner_id, registration_id, event_name, resources, status, created_at,
       last_attempted_at
FROM ({branches}) AS page
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: list_events_branch
(SELECT id, partner_id, registration_id, event_name, resources, status, created_at,
        last_attempted_at
 FROM events
 WHERE partner_id = $1 AND status = {status}::text{filters}
 ORDER BY created_at DESC, id DESC
 LIMIT $2)

-- name: list_events_registration_filter
AND registration_id = {value}::uuid

-- name: list_events_event_name_filter
AND event_name = {value}::text

-- name: list_events_created_after_filter
AND created_at > {value}::timestamptz

-- name: list_events_before_filter
AND (created_at, id) < ({value}::timestamptz, {value2}::uuid)

-- name: get_event
SELECT id, partner_id, registration_id, event_name, resources, status, created_at,
       last_attempted_at
FROM events WHERE id = $1 AND partner_id = $2;

-- name: list_attempts
SELECT event_id, attempt_number, attempted_at, duration_ms, response_status, error, response_body
FROM attempts WHERE event_id = $1 ORDER BY attempt_number;

-- name: insert_test_event
-- A test delivery is history only: it never enters delivery_queue.
INSERT INTO events (id, partner_id, registration_id, event_name, resources, status,
                    attempt_count, last_attempted_at)
VALUES ($1, $2, $3, 'test.event', '{}', $4, 1, $5)
RETURNING id, partner_id, registration_id, event_name, resources, status, created_at,
          last_attempted_at;

-- name: purge_finished_events
DELETE FROM events WHERE id IN (
    SELECT id FROM events WHERE status <> 'Pending'
      AND created_at < now() - make_interval(days => $1)
    LIMIT $2);

-- name: drop_expired_previous_secrets
UPDATE registrations SET previous_secret_sealed = NULL, previous_secret_expires_at = NULL
WHERE previous_secret_expires_at <= now();

-- name: gauge_registrations
SELECT status, count(*) AS n FROM registrations GROUP BY status;

-- name: expire_pending_events
-- BROKER_PENDING_TTL_DAYS: queued event objects older than $1 days leave the queue and become
-- Failed history (resend or replay can queue them again). A leased row is left alone: its
-- attempt is in flight, and the worker's result decides. Hourly, so the scan of the (narrow)
-- queue costs little; the queue has no created_at index on purpose (no index on hot rows
-- beyond what the claim needs).
WITH expired AS (
    DELETE FROM delivery_queue
    WHERE created_at < now() - make_interval(days => $1) AND locked_until IS NULL
    RETURNING event_id)
UPDATE events e SET status = 'Failed'
FROM expired WHERE e.id = expired.event_id AND e.status = 'Pending';

-- name: write_gauge_snapshot
INSERT INTO gauge_snapshot (taken_at, gauges) VALUES (now(), $1)
ON CONFLICT (singleton) DO UPDATE SET taken_at = excluded.taken_at, gauges = excluded.gauges;

-- name: read_gauge_snapshot
-- What /metrics serves: one row, whatever the size of the queue.
SELECT gauges, extract(epoch FROM now() - taken_at)::float8 AS age FROM gauge_snapshot;
