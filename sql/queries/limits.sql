-- Rate limits: token buckets in rate_buckets (UNLOGGED), shared by every broker process.

-- name: take_token
-- One request against bucket $1, which refills at $2 tokens per second up to $3: refill by the
-- time since its last use, then take a token if a whole one is there. took says whether it did;
-- tokens is what is left, from which a refused caller computes Retry-After. One statement on one
-- row, so concurrent requests from any number of processes queue on the row lock and the limit
-- holds across all of them. clock_timestamp(), not now(): the time after the lock wait.
INSERT INTO rate_buckets AS b (key, tokens, took, updated_at)
VALUES ($1, $3::float8 - 1, true, clock_timestamp())
ON CONFLICT (key) DO UPDATE SET
    took = least($3, b.tokens + $2 * greatest(0, extract(epoch FROM clock_timestamp() - b.updated_at))::float8) >= 1,
    tokens = least($3, b.tokens + $2 * greatest(0, extract(epoch FROM clock_timestamp() - b.updated_at))::float8)
             - CASE WHEN least($3, b.tokens + $2 * greatest(0, extract(epoch FROM clock_timestamp() - b.updated_at))::float8) >= 1
                    THEN 1 ELSE 0 END,
    updated_at = clock_timestamp()
RETURNING took, tokens;
