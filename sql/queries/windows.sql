-- Closing windows: due window_groups and their resource_events become event objects.
--
-- One close is one transaction: a group's due window, and for a backlogged group the full
-- windows queued behind it (broker/store/windows.py). It is made exclusive across processes by
-- an advisory lock per group, not by a row lock on window_groups: ingest upserts that row in
-- every group commit, and a row lock held for a whole close made every producer in that group
-- commit wait for it. The close takes the row lock only for its last statement (lock_window_group, then advance or
-- delete), so an ingest waits at most for that and the commit, whatever the window's size.

-- name: claim_due_window
-- One due group whose close lock this transaction got (another process closing it: skipped).
-- The subquery's LIMIT keeps the lock attempts to the earliest due groups, one taken.
SELECT partner_id, event_name
FROM (SELECT partner_id, event_name FROM window_groups
      WHERE due_at <= now() ORDER BY due_at LIMIT $1) AS due
WHERE pg_try_advisory_xact_lock(hashtext(partner_id::text), hashtext(event_name))
LIMIT 1;

-- name: window_group_state
-- Read after the close lock, in a new snapshot: what a close that committed just before this
-- one's lock left (a reopened window, or none) is what this close sees.
SELECT opened_at, last_event_at, queued_count, consumed_through, trace_links, now() AS db_now
FROM window_groups
WHERE partner_id = $1 AND event_name = $2 AND due_at <= now();

-- name: next_window_due_in
-- Seconds until the earliest window is due (the aggregator sleeps that long, at most).
SELECT extract(epoch FROM (min(due_at) - now()))::float8 FROM window_groups;

-- name: window_resource_events
-- From consumed_through on: the index range starts past what earlier closes deleted.
SELECT id, resource FROM resource_events
WHERE partner_id = $1 AND event_name = $2 AND id > $3
ORDER BY id
LIMIT $4;

-- name: consume_resource_events
-- The resource events the window folded: ids in (consumed_through, cutoff].
DELETE FROM resource_events
WHERE partner_id = $1 AND event_name = $2 AND id > $3 AND id <= $4;

-- name: lock_window_group
-- Waits for the group commits that are inserting resource events of this group (ingest
-- upserts the group row before it copies its rows), so the next statement sees all of them.
SELECT queued_count FROM window_groups WHERE partner_id = $1 AND event_name = $2 FOR UPDATE;

-- name: advance_window_group
-- After a close: $3 resource events were deleted, through id $4; $5 the old consumed_through.
-- What is left opens the next window now (due at once if it may be full). A resource event
-- below the cutoff that this close could not see yet (its group commit was in flight) is still
-- waiting, so consumed_through stops just before the first of those. pending_count restarts
-- from the exact number of resource events left, an upper bound on their distinct resources.
-- $6 min seconds, $7 max seconds, $8 max resources.
UPDATE window_groups SET
    queued_count = queued_count - $3,
    pending_count = queued_count - $3,
    consumed_through = coalesce(
        (SELECT min(id) - 1 FROM resource_events
         WHERE partner_id = $1 AND event_name = $2 AND id > $5 AND id <= $4), $4),
    opened_at = now(), last_event_at = now(),
    due_at = CASE WHEN queued_count - $3 >= $8::bigint THEN now()
                  ELSE now() + make_interval(secs => least($6::float8, $7::float8)) END
WHERE partner_id = $1 AND event_name = $2;

-- name: reschedule_window_group
-- The size estimate counted duplicates: keep the window open. $3 distinct resources among the
-- $4 resource events read; events committed since (queued_count - $4) may all be new.
UPDATE window_groups SET
    pending_count = $3 + greatest(queued_count - $4, 0),
    due_at = least(last_event_at + make_interval(secs => $5::float8),
                   opened_at + make_interval(secs => $6::float8))
WHERE partner_id = $1 AND event_name = $2;

-- name: delete_window_group
-- Under the row lock, when the $3 resource events this close deletes are all that is queued.
DELETE FROM window_groups WHERE partner_id = $1 AND event_name = $2 AND queued_count = $3;

-- name: matching_registrations
-- Patterns: an exact name, a prefix wildcard "Core.Account.*", or "*". The broker's own
-- operational events (Broker.*) go only to patterns that name Broker. explicitly ("Broker.*",
-- "Broker.Registration.*", an exact name): "*" never matches them, so a registration made
-- before they existed receives nothing new.
SELECT id FROM registrations
WHERE partner_id = $1
  AND status <> 'Deleted'
  AND EXISTS (
      SELECT 1 FROM unnest(event_types) AS p
      WHERE (p = $2 OR p = '*' OR (right(p, 2) = '.*' AND starts_with($2, left(p, -1))))
        AND (NOT starts_with($2, 'Broker.') OR starts_with(p, 'Broker.')))
ORDER BY created_at, id;
