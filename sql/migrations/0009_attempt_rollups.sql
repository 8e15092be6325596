-- Per-registration attempt rollups: what GET /webhooks/v1/registrations/{id}/stats reads
-- (API.md, "More partner API"). Scanning attempts at read time would cost one row per attempt
-- (a million for a busy week); a rollup row holds one bucket's counts and latency histogram,
-- so a 7-day answer reads 420 rows whatever the traffic.
--
-- Two granularities, both aligned to the Unix epoch so that every period's 60 buckets are made
-- of whole rows: 1-minute rows (the 1 h period: 60 x 1 min) and 24-minute rows (24 h: 60 x 24
-- min; 7 d: 60 x 168 min, each 7 rows). 1-minute rows are kept 2 hours, 24-minute rows 8 days
-- (prune_attempt_rollups).
--
-- What counts: every attempt with a real result, a delivery or a test delivery (success: no
-- error and an HTTP 2xx, as broker/http/sender.py decides). A placeholder attempt ("the worker
-- stopped during this attempt") has no outcome and is not counted; when its late real result
-- replaces it, that result is counted, once.
--
-- latency is a histogram of duration_ms in 51 log-scale buckets: bucket 0 holds 0 ms, bucket k
-- (1..49) holds [1.25^(k-1), 1.25^k) ms, bucket 50 everything from 1.25^49 ms (about 56 s).
-- Summed histograms give percentiles within 12% (broker/domain/latency.py).
--
-- The rollups are written by the result flush in its transaction (stats.sql,
-- add_attempt_rollups), after the registrations are locked, so writers are serialized per
-- registration and in the flush's lock order.

CREATE TABLE attempt_rollups (
    registration_id  uuid NOT NULL REFERENCES registrations (id) ON DELETE CASCADE,
    width_minutes    smallint NOT NULL CHECK (width_minutes IN (1, 24)),
    bucket_start     timestamptz NOT NULL,
    success          integer NOT NULL DEFAULT 0,
    failure          integer NOT NULL DEFAULT 0,
    latency          integer[] NOT NULL CHECK (cardinality(latency) = 51),
    PRIMARY KEY (registration_id, width_minutes, bucket_start)
);

-- The latency bucket of a duration (see above). Python's broker/domain/latency.py holds the
-- same bounds; tests/unit/test_latency.py and the stats tests check they agree.
CREATE FUNCTION broker_latency_bucket(ms integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN ms < 1 THEN 0 ELSE least(50, floor(ln(ms) / ln(1.25))::integer + 1) END
$$;

-- A 51-count histogram from (bucket, count) pairs.
CREATE FUNCTION broker_latency_histogram(buckets integer[], counts bigint[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(c.n, 0)::integer ORDER BY k)
    FROM generate_series(0, 50) AS k
    LEFT JOIN (SELECT b, sum(n) AS n FROM unnest(buckets, counts) AS u(b, n) GROUP BY b) AS c
        ON c.b = k
$$;

-- Two histograms added bucket by bucket (an upsert into an existing rollup row). Written out
-- element by element: a function that is one expression is inlined into the calling query,
-- where unnest ... array_agg ran a subquery per upserted row (measured: ~15% of the write).
CREATE FUNCTION broker_latency_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[
           a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6],
           a[7] + b[7], a[8] + b[8], a[9] + b[9], a[10] + b[10], a[11] + b[11], a[12] + b[12],
           a[13] + b[13], a[14] + b[14], a[15] + b[15], a[16] + b[16], a[17] + b[17], a[18] + b[18],
           a[19] + b[19], a[20] + b[20], a[21] + b[21], a[22] + b[22], a[23] + b[23], a[24] + b[24],
           a[25] + b[25], a[26] + b[26], a[27] + b[27], a[28] + b[28], a[29] + b[29], a[30] + b[30],
           a[31] + b[31], a[32] + b[32], a[33] + b[33], a[34] + b[34], a[35] + b[35], a[36] + b[36],
           a[37] + b[37], a[38] + b[38], a[39] + b[39], a[40] + b[40], a[41] + b[41], a[42] + b[42],
           a[43] + b[43], a[44] + b[44], a[45] + b[45], a[46] + b[46], a[47] + b[47], a[48] + b[48],
           a[49] + b[49], a[50] + b[50], a[51] + b[51]
    ]
$$;

-- Rollups rebuilt from the attempts table, for one registration or (NULL) all: the backfill
-- below, and the stats bench, which fills attempts by SQL and then calls this (named query
-- rebuild_attempt_rollups), so the bench measures rows made exactly as an upgrade makes them.
CREATE FUNCTION broker_rebuild_attempt_rollups(p_registration uuid) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    DELETE FROM attempt_rollups
    WHERE p_registration IS NULL OR registration_id = p_registration;
    WITH counted AS (
        SELECT e.registration_id, w.width,
               date_bin(make_interval(mins => w.width), a.attempted_at,
                        '1970-01-01 00:00:00+00') AS bucket_start,
               broker_latency_bucket(a.duration_ms) AS b,
               count(*) FILTER (WHERE o.ok) AS success,
               count(*) FILTER (WHERE NOT o.ok) AS failure
        FROM attempts a
        JOIN events e ON e.id = a.event_id
        CROSS JOIN LATERAL (SELECT a.error IS NULL
                                   AND coalesce(a.response_status BETWEEN 200 AND 299, false)
                            ) AS o(ok)
        CROSS JOIN (VALUES (1, interval '2 hours'), (24, interval '8 days')) AS w(width, keep)
        WHERE NOT a.placeholder
          AND a.attempted_at >= now() - w.keep
          AND (p_registration IS NULL OR e.registration_id = p_registration)
        GROUP BY 1, 2, 3, 4
    ), rolled AS (
        INSERT INTO attempt_rollups (registration_id, width_minutes, bucket_start, success,
                                     failure, latency)
        SELECT registration_id, width, bucket_start, sum(success), sum(failure),
               broker_latency_histogram(array_agg(b), array_agg(success + failure))
        FROM counted
        GROUP BY 1, 2, 3
        RETURNING 1
    )
    SELECT count(*) FROM rolled
$$;

SELECT broker_rebuild_attempt_rollups(NULL);
