-- Operator signals for /metrics: worker heartbeats and the age of the oldest due work per
-- worker role. Each is an index lookup or a read of a table with one row per worker process,
-- so neither grows with the queue.

-- name: write_heartbeats
-- One statement per process per second at most. $2 roles, $3 seconds since each one's last
-- claim by the process's own monotonic clock: the time is the database's (now() minus that),
-- like every other time broker compares, so host clocks do not matter.
INSERT INTO worker_heartbeats AS h (process, role, last_claim_at)
SELECT $1, t.role, now() - make_interval(secs => t.age)
FROM unnest($2::text[], $3::float8[]) AS t(role, age)
ON CONFLICT (process, role) DO UPDATE SET last_claim_at = excluded.last_claim_at;

-- name: read_scrape
-- Every scrape of every process, in one round trip: the gauge snapshot housekeeping keeps (one
-- row; NULLs before the first refresh) and the heartbeats (one row per live worker process and
-- role). The gauges come as text, so a scrape compares them with the last ones it rendered
-- instead of decoding them (jsonb's text is canonical: same value, same text).
SELECT s.gauges::text AS gauges,
       extract(epoch FROM now() - s.taken_at)::float8 AS gauges_age,
       h.processes, h.roles, h.last_claims
FROM (SELECT coalesce(array_agg(process), '{}') AS processes,
             coalesce(array_agg(role), '{}') AS roles,
             coalesce(array_agg(extract(epoch FROM last_claim_at)::float8), '{}') AS last_claims
      FROM worker_heartbeats) AS h
LEFT JOIN gauge_snapshot AS s ON true;

-- name: prune_heartbeats
-- Housekeeping: the rows of processes that stopped claiming $1 seconds ago or more.
DELETE FROM worker_heartbeats WHERE last_claim_at < now() - make_interval(secs => $1::float8);

-- name: gauge_oldest_due
-- How long the oldest due work of each worker role has waited for a worker; 0 when none waits.
-- delivery: the earliest ready row due (delivery_ready_due, ordered, LIMIT 1) that has a due,
-- unleased queue row. A ready row is due exactly when its registration may be claimed (a
-- Paused or Suspended one is parked at 'infinity', an open breaker at its probe, one at its
-- concurrency cap or rate limit later), so a queue that waits by design never counts; the
-- EXISTS skips the few rows a recorded result left due with nothing queued (delivery_queue_due).
-- aggregator: the earliest window past its due_at (window_groups_due), or the oldest
-- operational event waiting in the outbox (its primary key is in insertion order).
SELECT
    coalesce((SELECT extract(epoch FROM now() - d.next_due_at)
              FROM delivery_ready d
              WHERE d.next_due_at <= now()
                AND EXISTS (SELECT 1 FROM delivery_queue q
                            WHERE q.registration_id = d.registration_id
                              AND q.next_attempt_at <= now()
                              AND (q.locked_until IS NULL OR q.locked_until < now()))
              ORDER BY d.next_due_at
              LIMIT 1), 0)::float8 AS delivery,
    greatest(
        coalesce((SELECT extract(epoch FROM now() - due_at) FROM window_groups
                  WHERE due_at <= now() ORDER BY due_at LIMIT 1), 0),
        coalesce((SELECT extract(epoch FROM now() - created_at) FROM operational_outbox
                  ORDER BY id LIMIT 1), 0))::float8 AS aggregator;
