-- Producer ingest: resource events in, window due times kept current.

-- name: claim_idempotency_key
-- Inserted in the ingest transaction: a concurrent request with the same key waits on the
-- unique index, then sees the conflict and returns the first answer.
INSERT INTO idempotency_keys (producer_key_id, idempotency_key, response_status, response_body)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
RETURNING 1;

-- name: get_idempotent_answer
-- Keys are honoured for 24 h; an older row is ignored (and purged by housekeeping).
SELECT response_status, response_body FROM idempotency_keys
WHERE producer_key_id = $1 AND idempotency_key = $2
  AND created_at > now() - interval '24 hours';

-- name: reclaim_expired_idempotency_key
DELETE FROM idempotency_keys
WHERE producer_key_id = $1 AND idempotency_key = $2
  AND created_at <= now() - interval '24 hours';

-- name: upsert_window_groups
-- $1 partners, $2 event names, $3 resource-event counts; $4 min seconds, $5 max seconds,
-- $6 max resources. Sorted so concurrent ingests lock groups in one order (no deadlocks).
-- Run before the COPY of the resource events: every transaction inserting rows of a group holds
-- its row lock, which is what lets a close know which ids below its cutoff may still appear
-- (windows.sql, lock_window_group). queued_count is exact (a close subtracts what it deletes).
-- A new group has nothing waiting (a group row is deleted only when empty), so its
-- consumed_through starts below any id not yet handed out: its close skips the dead index
-- entries of earlier windows.
-- pending_count counts resource events, not distinct resources: it can only over-estimate, and
-- the aggregator re-counts exactly before closing on the size rule.
-- When it opens a window, or makes one due now (size rule), it notifies broker_windows (sent at
-- commit): a sleeping aggregator learns the new earliest due time at once instead of after its
-- poll interval, which keeps the time from a window's close to its delivery short.
-- $7: this commit's trace context (NULL while tracing is off), kept for the close to link to.
WITH up AS (
    INSERT INTO window_groups AS g (partner_id, event_name, opened_at, last_event_at, pending_count,
                                    queued_count, consumed_through, due_at, trace_links)
    SELECT p, e, now(), now(), n, n, (SELECT last_value - 1 FROM resource_events_id_seq),
           CASE WHEN n >= $6 THEN now()
                ELSE now() + make_interval(secs => least($4::float8, $5::float8)) END,
           CASE WHEN $7::text IS NULL THEN NULL ELSE ARRAY[$7::text] END
    FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS t(p, e, n)
    ORDER BY p, e
    ON CONFLICT (partner_id, event_name) DO UPDATE SET
        last_event_at = now(),
        trace_links = CASE WHEN $7::text IS NULL OR cardinality(g.trace_links) >= 16
                           THEN g.trace_links ELSE array_append(g.trace_links, $7::text) END,
        pending_count = g.pending_count + excluded.pending_count,
        queued_count = g.queued_count + excluded.queued_count,
        due_at = CASE WHEN g.pending_count + excluded.pending_count >= $6 THEN now()
                      ELSE least(now() + make_interval(secs => $4::float8),
                                 g.opened_at + make_interval(secs => $5::float8)) END
    RETURNING (g.xmax = 0 OR g.due_at <= now()) AS wake
)
SELECT pg_notify('broker_windows', '') FROM (SELECT 1 FROM up WHERE wake LIMIT 1) AS w;

-- name: purge_idempotency_keys
DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours';

-- name: take_operational_events
-- The oldest outbox rows, deleted in the transaction that stores them as resource events
-- (IngestQueries.move_operational_events). SKIP LOCKED: each aggregator takes its own rows.
DELETE FROM operational_outbox
WHERE id IN (SELECT id FROM operational_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, partner_id, event_name, resource, created_at;
