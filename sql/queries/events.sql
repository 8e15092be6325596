-- The partner events API and housekeeping of event history.

-- name: list_events
-- One page of history, newest first, over one id range (the store walks the day partitions
-- newest first, in runs of 1, 2, 4... days with literal bounds, until the page is full: a plan
-- over every partition of the retention period costs more to make than the page to read). The store builds one query text per
-- filter shape (which filters are present) from the list_events_* blocks, so every predicate
-- is an index condition: no "$n IS NULL OR ..." that a generic plan (used by a prepared
-- statement after five runs) cannot drop. The page is a UNION ALL of one list_events_branch per
-- status asked for (the one given, or all three), each with the list_events_*_filter blocks of
-- the shape. created_at is derived from the uuid7 id (migration 0011), so the page order
-- (created_at, id) is id order and every time bound is an id bound. Each branch reads the
-- index that begins with its equality filters, in id order, and stops at $2 rows; Merge
-- Append interleaves the branches:
--   partner + status                       -> events_partner_status
--   partner + event name + status          -> events_partner_name_status
--   partner + registration + status        -> events_partner_registration_status
--   partner + registration + name + status -> events_partner_registration_name_status
-- The window's resources are read for the page's rows only, one key lookup each, in the
-- windows partitions the range can reference (as a join, a generic plan hashed every window).
-- $1 partner, $2 rows to return; further parameters are numbered by the store.
SELECT id, partner_id, registration_id, event_name,
       coalesce((SELECT w.resources FROM windows w
                 WHERE w.id = page.window_id {windows_filters}), ARRAY[]::text[]) AS resources,
       status, created_at, last_attempted_at
FROM (SELECT * FROM ({branches}) AS merged ORDER BY id DESC LIMIT $2) AS page
ORDER BY id DESC;

-- name: list_events_branch
(SELECT id, partner_id, registration_id, event_name, window_id, status, created_at,
        last_attempted_at
 FROM events
 WHERE partner_id = $1 AND status = {status}::text{filters}
 ORDER BY id DESC
 LIMIT $2)

-- name: list_events_registration_filter
AND registration_id = {value}::uuid

-- name: list_events_event_name_filter
AND event_name = {value}::text

-- name: list_events_from_filter
AND id >= {value}::uuid

-- name: list_events_before_filter
AND id < {value}::uuid

-- name: history_days_before
-- The days before $1 that have a history partition, newest first.
SELECT to_date(substr(c.relname, 9), 'YYYYMMDD') AS day
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_p[0-9]{8}$'
  AND to_date(substr(c.relname, 9), 'YYYYMMDD') < $1
ORDER BY 1 DESC;

-- name: get_event
SELECT e.id, e.partner_id, e.registration_id, e.event_name,
       coalesce((SELECT w.resources FROM windows w WHERE w.id = e.window_id),
                ARRAY[]::text[]) AS resources,
       e.status, e.created_at, e.last_attempted_at
FROM events e
WHERE e.id = $1 AND e.partner_id = $2;

-- name: list_attempts
SELECT event_id, attempt_number, attempted_at, duration_ms, response_status, error, response_body
FROM attempts WHERE event_id = $1 ORDER BY attempt_number;

-- name: insert_test_event
-- A test delivery is history only: it never enters delivery_queue, and carries no resources
-- (no window).
INSERT INTO events (id, partner_id, registration_id, event_name, status, attempt_count,
                    last_attempted_at)
VALUES ($1, $2, $3, 'test.event', $4, 1, $5)
RETURNING id, partner_id, registration_id, event_name, '{}'::text[] AS resources, status,
          created_at, last_attempted_at;

-- name: ensure_history_partitions
-- The day partitions of windows, events and attempts from $1 days ago to $2 days ahead (UTC).
SELECT broker_ensure_history_partitions((now() AT TIME ZONE 'UTC')::date - $1::int,
                                        (now() AT TIME ZONE 'UTC')::date + $2::int);

-- name: expired_history_days
-- Days whose whole partition is older than the retention period of $1 days.
SELECT to_date(substr(c.relname, 9), 'YYYYMMDD') AS day
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_p[0-9]{8}$'
  AND to_date(substr(c.relname, 9), 'YYYYMMDD') + 1
      <= ((now() - make_interval(days => $1)) AT TIME ZONE 'UTC')::date
ORDER BY 1;

-- name: drop_history_day
-- Under the caller's lock_timeout (see broker_drop_history_day in migration 0011).
SELECT broker_drop_history_day($1::date);

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
