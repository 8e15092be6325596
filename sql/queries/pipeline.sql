-- The pipeline: closing windows into event objects, claiming and recording deliveries.

-- name: claim_due_windows
-- FOR UPDATE SKIP LOCKED: each due group is closed by exactly one process.
SELECT partner_id, event_name, opened_at, last_event_at, now() AS db_now
FROM window_groups
WHERE due_at <= now()
ORDER BY due_at
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: next_window_due_in
-- Seconds until the earliest window is due (the aggregator sleeps that long, at most).
SELECT extract(epoch FROM (min(due_at) - now()))::float8 FROM window_groups;

-- name: window_resource_events
SELECT id, resource FROM resource_events
WHERE partner_id = $1 AND event_name = $2 AND id > $3
ORDER BY id
LIMIT $4;

-- name: consume_resource_events
DELETE FROM resource_events
WHERE partner_id = $1 AND event_name = $2 AND id <= $3;

-- name: count_remaining_resource_events
SELECT count(*) FROM resource_events WHERE partner_id = $1 AND event_name = $2;

-- name: reopen_window_group
-- What is left after a size-capped close opens the next window now.
UPDATE window_groups SET
    opened_at = now(), last_event_at = now(), pending_count = $3, queued_count = $3,
    due_at = CASE WHEN $3::bigint >= $6::bigint THEN now()
                  ELSE now() + make_interval(secs => least($4::float8, $5::float8)) END
WHERE partner_id = $1 AND event_name = $2;

-- name: reschedule_window_group
-- The size estimate counted duplicates: keep the window open with the exact count.
UPDATE window_groups SET
    pending_count = $3,
    due_at = least(last_event_at + make_interval(secs => $4::float8), opened_at + make_interval(secs => $5::float8))
WHERE partner_id = $1 AND event_name = $2;

-- name: delete_window_group
DELETE FROM window_groups WHERE partner_id = $1 AND event_name = $2;

-- name: matching_registrations
-- Patterns: an exact name, a prefix wildcard "Core.Account.*", or "*".
SELECT id FROM registrations
WHERE partner_id = $1
  AND status <> 'Deleted'
  AND EXISTS (
      SELECT 1 FROM unnest(event_types) AS p
      WHERE p = $2 OR p = '*'
         OR (right(p, 2) = '.*' AND starts_with($2, left(p, -1))))
ORDER BY created_at, id;

-- name: insert_events
INSERT INTO events (id, partner_id, registration_id, event_name, resources)
SELECT id, $2, reg, $3, $4::text[]
FROM unnest($1::uuid[], $5::uuid[]) AS t(id, reg);

-- name: notify_events
SELECT pg_notify('broker_events', '');

-- name: take_claim_lock
-- Claims take turns (transaction-scoped) so the per-registration in-flight cap holds across
-- worker processes; a claim is a few milliseconds, the HTTP it feeds is far longer.
SELECT pg_advisory_xact_lock($1);

-- name: claim_active_deliveries
-- Per active registration, its due Pending events in order, at most $2 in flight across all
-- workers (leases counted), at most $1 in all; the lease makes a dead worker's events due again.
-- Registrations are visited in random order so a busy one cannot starve the rest.
-- The candidate rows are locked, so their last_attempted_at is the value before this claim; the
-- registration's delivery target (URL, live secrets, basic auth) comes back with each row, which
-- saves the worker a second query per claim.
WITH cand AS (
    SELECT e.id, e.last_attempted_at, r.id AS registration_id
    FROM (SELECT id FROM registrations WHERE status = 'Active' ORDER BY random()) AS r
    CROSS JOIN LATERAL (
        SELECT ev.id, ev.last_attempted_at FROM events ev
        WHERE ev.registration_id = r.id AND ev.status = 'Pending'
          AND ev.next_attempt_at <= now()
          AND (ev.locked_until IS NULL OR ev.locked_until < now())
        ORDER BY ev.next_attempt_at, ev.created_at
        LIMIT greatest(0, $2 - (SELECT count(*) FROM events l
                                WHERE l.registration_id = r.id AND l.status = 'Pending'
                                  AND l.locked_until IS NOT NULL AND l.locked_until > now()))
        FOR UPDATE SKIP LOCKED
    ) AS e
    LIMIT $1
)
UPDATE events ev SET
    locked_until = now() + make_interval(secs => $3::float8),
    locked_by = $4,
    attempt_count = ev.attempt_count + 1,
    round_attempts = ev.round_attempts + 1,
    last_attempted_at = now()
FROM cand JOIN registrations tr ON tr.id = cand.registration_id
WHERE ev.id = cand.id
RETURNING ev.id, ev.partner_id, ev.registration_id, ev.event_name, ev.resources, ev.created_at,
          cand.last_attempted_at AS previous_attempted_at, ev.attempt_count, ev.round_attempts,
          ev.last_attempted_at AS attempted_at,
          tr.url, tr.status AS registration_status, tr.secret, tr.basic_auth,
          CASE WHEN tr.previous_secret_expires_at > now() THEN tr.previous_secret END
              AS previous_secret;

-- name: claim_restarting_deliveries
-- A Restarting registration's oldest queued event gets exactly one attempt: the registration
-- row is locked (SKIP LOCKED) so two workers cannot each probe with a different event, and no
-- probe starts while another is in flight.
WITH r AS (
    SELECT reg.id FROM registrations reg
    WHERE reg.status = 'Restarting'
      AND NOT EXISTS (SELECT 1 FROM events l
                      WHERE l.registration_id = reg.id AND l.status = 'Pending'
                        AND l.locked_until IS NOT NULL AND l.locked_until > now())
      -- Only those with something queued: registrations waiting in Restarting for their next
      -- event must not use up the LIMIT and starve the ones that have a probe to make.
      AND EXISTS (SELECT 1 FROM events q WHERE q.registration_id = reg.id AND q.status = 'Pending')
    LIMIT $1
    FOR NO KEY UPDATE SKIP LOCKED
), cand AS (
    SELECT e.id, e.last_attempted_at, r.id AS registration_id FROM r CROSS JOIN LATERAL (
        SELECT ev.id, ev.last_attempted_at FROM events ev
        WHERE ev.registration_id = r.id AND ev.status = 'Pending'
        ORDER BY ev.created_at, ev.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) AS e
)
UPDATE events ev SET
    locked_until = now() + make_interval(secs => $2::float8),
    locked_by = $3,
    attempt_count = ev.attempt_count + 1,
    last_attempted_at = now()
FROM cand JOIN registrations tr ON tr.id = cand.registration_id
WHERE ev.id = cand.id
RETURNING ev.id, ev.partner_id, ev.registration_id, ev.event_name, ev.resources, ev.created_at,
          cand.last_attempted_at AS previous_attempted_at, ev.attempt_count, ev.round_attempts,
          ev.last_attempted_at AS attempted_at,
          tr.url, tr.status AS registration_status, tr.secret, tr.basic_auth,
          CASE WHEN tr.previous_secret_expires_at > now() THEN tr.previous_secret END
              AS previous_secret;

-- name: insert_attempts
INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms, response_status,
                      error, response_body)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::int[],
                     $6::text[], $7::text[])
ON CONFLICT (event_id, attempt_number) DO NOTHING;

-- name: finish_events
-- Results in one statement. Guarded by attempt_count: if a lease expired and another worker
-- re-claimed the event, only the latest claim's result decides the event's state; and by the
-- lease itself, so a result written twice (a flush retried after a lost COMMIT answer) applies
-- once. A resend during the attempt reset round_attempts to 0: the resend wins, and the event
-- stays Pending and due for its new round. RETURNING: the results that applied (the store
-- lets only those move the registration).
UPDATE events ev SET
    status = CASE WHEN ev.round_attempts < t.round_attempts THEN 'Pending' ELSE t.status END,
    next_attempt_at = CASE WHEN ev.round_attempts < t.round_attempts THEN ev.next_attempt_at
                           ELSE coalesce(t.next_attempt_at, ev.next_attempt_at) END,
    round_attempts = least(ev.round_attempts, t.round_attempts),
    locked_until = NULL,
    locked_by = NULL
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int[])
     AS t(id, attempt_count, status, next_attempt_at, round_attempts)
WHERE ev.id = t.id AND ev.attempt_count = t.attempt_count AND ev.status = 'Pending'
  AND ev.locked_until IS NOT NULL
RETURNING ev.id;

-- name: record_registration_outcomes
-- Per registration: $2 consecutive failures since the last success in this batch (reset when
-- it saw a success), the latest success and failure times.
UPDATE registrations r SET
    failure_count = CASE WHEN t.had_success THEN t.failures_after_success
                         ELSE r.failure_count + t.failures_after_success END,
    last_success_at = greatest(r.last_success_at, t.last_success_at),
    last_failure_at = greatest(r.last_failure_at, t.last_failure_at)
FROM unnest($1::uuid[], $2::int[], $3::bool[], $4::timestamptz[], $5::timestamptz[])
     AS t(id, failures_after_success, had_success, last_success_at, last_failure_at)
WHERE r.id = t.id;

-- name: transition_registrations
-- Worker-driven steps of the state machine, guarded by the old status.
UPDATE registrations r SET status = t.new_status, updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(id, old_status, new_status)
WHERE r.id = t.id AND r.status = t.old_status
RETURNING r.id, r.status;

-- name: release_leases
-- A draining worker hands its unfinished claims back at once.
UPDATE events SET locked_until = NULL, locked_by = NULL,
                  attempt_count = attempt_count - 1,
                  round_attempts = greatest(round_attempts - 1, 0)
WHERE id = ANY($1::uuid[]) AND locked_by = $2 AND status = 'Pending';

-- name: record_lost_attempts
-- Claimed events whose previous attempt has no row: the worker that made it stopped before
-- recording a result and its lease ran out. "Every attempt is recorded", so that attempt is
-- written now, with the outcome unknown. $1 event ids, $2 the previous attempt's number,
-- $3 its start (from last_attempted_at); a late result from that worker then loses the race on
-- the unique (event_id, attempt_number), which is fine: the event has been claimed again anyway.
INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms, response_status,
                      error, response_body)
SELECT t.id, t.n, t.at, 0, NULL,
       'no result was recorded: the worker stopped during this attempt and its lease expired', NULL
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS t(id, n, at)
WHERE t.n >= 1 AND t.at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = t.id AND a.attempt_number = t.n)
ON CONFLICT (event_id, attempt_number) DO NOTHING;
