-- name: add_attempt_rollups
-- A batch of real attempt results added to their registrations' rollups (migration 0009), in
-- the transaction that records them and before it does: a result whose attempt already has a
-- real row (a flush retried after a lost COMMIT answer) is not counted twice; one that replaces
-- a placeholder is counted, once (placeholders never are). Under the registrations' locks
-- (lock_for_results, or record_test_outcome for a test delivery), rows are upserted in
-- registration order. $1 registration, $2 event, $3 attempt number, $4 attempted_at,
-- $5 duration_ms, $6 success.
WITH t AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::timestamptz[], $5::int[],
                         $6::bool[])
        AS t(registration_id, event_id, n, attempted_at, duration_ms, ok)
), fresh AS (
    SELECT * FROM t
    WHERE NOT EXISTS (SELECT 1 FROM attempts a
                      WHERE a.event_id = t.event_id AND a.attempt_number = t.n
                        AND NOT a.placeholder)
), counted AS (
    SELECT f.registration_id, w.width,
           date_bin(make_interval(mins => w.width), f.attempted_at, '1970-01-01 00:00:00+00')
               AS bucket_start,
           broker_latency_bucket(f.duration_ms) AS b,
           count(*) FILTER (WHERE f.ok) AS success,
           count(*) FILTER (WHERE NOT f.ok) AS failure
    FROM fresh f CROSS JOIN (VALUES (1), (24)) AS w(width)
    GROUP BY 1, 2, 3, 4
)
INSERT INTO attempt_rollups AS r (registration_id, width_minutes, bucket_start, success,
                                  failure, latency)
SELECT registration_id, width, bucket_start, sum(success), sum(failure),
       broker_latency_histogram(array_agg(b), array_agg(success + failure))
FROM counted
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
ON CONFLICT (registration_id, width_minutes, bucket_start) DO UPDATE SET
    success = r.success + excluded.success,
    failure = r.failure + excluded.failure,
    latency = broker_latency_add(r.latency, excluded.latency);

-- name: stats_rollups
-- One period's rollup rows of a registration: $2 the row width in minutes, [$3, $4) the span.
SELECT bucket_start, success, failure, latency
FROM attempt_rollups
WHERE registration_id = $1 AND width_minutes = $2 AND bucket_start >= $3 AND bucket_start < $4;

-- name: stats_registration
-- The registration (scoped to its partner; Deleted is 404, as for GET), its queue (delivery_queue holds exactly its
-- Pending event objects; the index on registration_id serves both aggregates) and the
-- database clock the buckets are cut by.
SELECT now() AS db_now,
       (SELECT count(*) FROM delivery_queue q WHERE q.registration_id = r.id) AS pending,
       (SELECT min(q.created_at) FROM delivery_queue q WHERE q.registration_id = r.id)
           AS oldest_pending_at
FROM registrations r
WHERE r.id = $1 AND r.partner_id = $2 AND r.status <> 'Deleted';

-- name: rebuild_attempt_rollups
-- A registration's rollups (NULL: all) rebuilt from its attempts with the migration's backfill
-- (broker_rebuild_attempt_rollups, 0009); the stats bench uses it. Returns the rows written.
SELECT broker_rebuild_attempt_rollups($1::uuid);

-- name: prune_attempt_rollups
-- Housekeeping: rows older than any period reads (1-minute rows past 2 hours, 24-minute rows
-- past 8 days).
DELETE FROM attempt_rollups
WHERE (width_minutes = 1 AND bucket_start < now() - interval '2 hours')
   OR (width_minutes = 24 AND bucket_start < now() - interval '8 days');
