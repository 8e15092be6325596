-- The partner events API and housekeeping of event history.

-- name: list_events
-- Keyset pagination, newest first: ($6, $7) is the last row of the previous page. NULL filters
-- match everything; the planner picks the matching (partner_id, ..., created_at, id) index.
-- The cursor and the time bounds are always present (NULL -> +/-infinity) rather than
-- "$n IS NULL OR ...": a prepared statement may be run with a generic plan, which cannot drop
-- an OR branch, and would then read and filter every row newer than the cursor instead of
-- starting its index scan there.
SELECT id, partner_id, registration_id, event_name, resources, status, created_at,
       last_attempted_at
FROM events
WHERE partner_id = $1
  AND ($2::uuid IS NULL OR registration_id = $2)
  AND ($3::text IS NULL OR event_name = $3)
  AND ($4::text IS NULL OR status = $4)
  AND created_at > coalesce($5::timestamptz, '-infinity')
  AND created_at < coalesce($8::timestamptz, 'infinity')
  AND (created_at, id) < (coalesce($6::timestamptz, 'infinity'),
                          coalesce($7::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
ORDER BY created_at DESC, id DESC
LIMIT $9;

-- name: get_event
SELECT id, partner_id, registration_id, event_name, resources, status, created_at,
       last_attempted_at
FROM events WHERE id = $1 AND partner_id = $2;

-- name: list_attempts
SELECT event_id, attempt_number, attempted_at, duration_ms, response_status, error, response_body
FROM attempts WHERE event_id = $1 ORDER BY attempt_number;

-- name: resend_event
-- A new round of attempts. The registration must not be Deleted. A live lease is kept: an
-- attempt in flight finishes first (never two at once), and finish_events then sees the reset
-- round and leaves the event Pending and due.
UPDATE events ev SET status = 'Pending', round_attempts = 0, next_attempt_at = now()
FROM registrations r
WHERE ev.id = $1 AND ev.partner_id = $2 AND r.id = ev.registration_id AND r.status <> 'Deleted'
RETURNING ev.id, ev.partner_id, ev.registration_id, ev.event_name, ev.resources, ev.status,
          ev.created_at, ev.last_attempted_at;

-- name: insert_test_event
INSERT INTO events (id, partner_id, registration_id, event_name, resources, status,
                    attempt_count, round_attempts, last_attempted_at, next_attempt_at)
VALUES ($1, $2, $3, 'test.event', '{}', $4, 1, 1, $5, $5)
RETURNING id, partner_id, registration_id, event_name, resources, status, created_at,
          last_attempted_at;

-- name: purge_finished_events
DELETE FROM events WHERE id IN (
    SELECT id FROM events WHERE status <> 'Pending'
      AND created_at < now() - make_interval(days => $1)
    LIMIT $2);

-- name: drop_expired_previous_secrets
UPDATE registrations SET previous_secret = NULL, previous_secret_expires_at = NULL
WHERE previous_secret_expires_at <= now();

-- name: release_stale_leases
-- Safety net: the claim already ignores expired leases; this clears them for observability.
UPDATE events SET locked_until = NULL, locked_by = NULL
WHERE status = 'Pending' AND locked_until < now() - interval '1 minute';

-- name: gauge_queue
-- Pending event objects per status of their registration (a Suspended or Paused registration's
-- queue waits by design). due_lag: how long the oldest due, unleased event has waited for a
-- worker. Uses the partial Pending index; cheap even with a long delivered history.
SELECT r.status AS registration_status,
       count(*) AS depth,
       coalesce(extract(epoch FROM now() - min(e.created_at)), 0)::float8 AS oldest_age,
       coalesce(extract(epoch FROM now() - min(e.next_attempt_at) FILTER (
           WHERE e.next_attempt_at <= now()
             AND (e.locked_until IS NULL OR e.locked_until < now()))), 0)::float8 AS due_lag
FROM events e JOIN registrations r ON r.id = e.registration_id
WHERE e.status = 'Pending'
GROUP BY r.status;

-- name: gauge_registrations
SELECT status, count(*) AS n FROM registrations GROUP BY status;
