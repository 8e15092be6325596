-- The pipeline: closing windows into event objects (delivery.sql takes them from there).

-- name: claim_due_windows
-- FOR UPDATE SKIP LOCKED: each due group is closed by exactly one process.
SELECT partner_id, event_name, opened_at, last_event_at, trace_links, now() AS db_now
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
