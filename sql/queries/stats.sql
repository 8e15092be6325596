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
), rolled AS (
    -- The histogram in the same pass as the counts: one FILTER per latency bucket (51, as in
    -- migration 0009), measured cheaper than grouping per latency bucket and assembling.
    SELECT f.registration_id, w.width,
           date_bin(make_interval(mins => w.width), f.attempted_at, '1970-01-01 00:00:00+00')
               AS bucket_start,
           count(*) FILTER (WHERE f.ok)::int AS success,
           count(*) FILTER (WHERE NOT f.ok)::int AS failure,
           ARRAY[
               count(*) FILTER (WHERE l.b = 0), count(*) FILTER (WHERE l.b = 1),
               count(*) FILTER (WHERE l.b = 2), count(*) FILTER (WHERE l.b = 3),
               count(*) FILTER (WHERE l.b = 4), count(*) FILTER (WHERE l.b = 5),
               count(*) FILTER (WHERE l.b = 6), count(*) FILTER (WHERE l.b = 7),
               count(*) FILTER (WHERE l.b = 8), count(*) FILTER (WHERE l.b = 9),
               count(*) FILTER (WHERE l.b = 10), count(*) FILTER (WHERE l.b = 11),
               count(*) FILTER (WHERE l.b = 12), count(*) FILTER (WHERE l.b = 13),
               count(*) FILTER (WHERE l.b = 14), count(*) FILTER (WHERE l.b = 15),
               count(*) FILTER (WHERE l.b = 16), count(*) FILTER (WHERE l.b = 17),
               count(*) FILTER (WHERE l.b = 18), count(*) FILTER (WHERE l.b = 19),
               count(*) FILTER (WHERE l.b = 20), count(*) FILTER (WHERE l.b = 21),
               count(*) FILTER (WHERE l.b = 22), count(*) FILTER (WHERE l.b = 23),
               count(*) FILTER (WHERE l.b = 24), count(*) FILTER (WHERE l.b = 25),
               count(*) FILTER (WHERE l.b = 26), count(*) FILTER (WHERE l.b = 27),
               count(*) FILTER (WHERE l.b = 28), count(*) FILTER (WHERE l.b = 29),
               count(*) FILTER (WHERE l.b = 30), count(*) FILTER (WHERE l.b = 31),
               count(*) FILTER (WHERE l.b = 32), count(*) FILTER (WHERE l.b = 33),
               count(*) FILTER (WHERE l.b = 34), count(*) FILTER (WHERE l.b = 35),
               count(*) FILTER (WHERE l.b = 36), count(*) FILTER (WHERE l.b = 37),
               count(*) FILTER (WHERE l.b = 38), count(*) FILTER (WHERE l.b = 39),
               count(*) FILTER (WHERE l.b = 40), count(*) FILTER (WHERE l.b = 41),
               count(*) FILTER (WHERE l.b = 42), count(*) FILTER (WHERE l.b = 43),
               count(*) FILTER (WHERE l.b = 44), count(*) FILTER (WHERE l.b = 45),
               count(*) FILTER (WHERE l.b = 46), count(*) FILTER (WHERE l.b = 47),
               count(*) FILTER (WHERE l.b = 48), count(*) FILTER (WHERE l.b = 49),
               count(*) FILTER (WHERE l.b = 50)
           ]::int[] AS latency
    FROM fresh f
    CROSS JOIN (VALUES (1), (24)) AS w(width)
    CROSS JOIN LATERAL (SELECT broker_latency_bucket(f.duration_ms)) AS l(b)
    GROUP BY 1, 2, 3
)
INSERT INTO attempt_rollups AS r (registration_id, width_minutes, bucket_start, success,
                                  failure, latency)
SELECT * FROM rolled
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
-- The registration (scoped to its partner; Deleted is 404, as for GET), its queue
-- (delivery_queue holds exactly its Pending event objects; the index on registration_id serves
-- both aggregates) and the database clock the buckets are cut by.
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
