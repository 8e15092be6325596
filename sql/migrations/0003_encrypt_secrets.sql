-- 0003: secrets at rest, and the shared rate-limit buckets.
--
-- Registration secrets and basicAuth are sealed with AES-256-GCM (broker/crypto.py). The key
-- never reaches the database, so the existing values are sealed in Python: the migration runner
-- stops at the "-- step:" line, runs that step with the process's key ring, and goes on, all in
-- this migration's one transaction. A database with no registrations needs no key to migrate.
ALTER TABLE registrations
    ADD COLUMN secret_sealed bytea,
    ADD COLUMN previous_secret_sealed bytea,
    ADD COLUMN basic_auth_sealed bytea;

-- step: seal_registration_secrets

ALTER TABLE registrations
    DROP COLUMN secret,
    DROP COLUMN previous_secret,
    DROP COLUMN basic_auth;
ALTER TABLE registrations ALTER COLUMN secret_sealed SET NOT NULL;

-- Token buckets shared by every API process (the ingest rate limit, test deliveries): one row per
-- limited key. UNLOGGED: a bucket is not worth a WAL write or a synchronous commit per request,
-- and losing the table in a crash or a failover only refills every bucket.
CREATE UNLOGGED TABLE rate_buckets (
    key         text PRIMARY KEY,
    tokens      double precision NOT NULL,
    took        boolean NOT NULL,  -- whether the latest request got a token
    updated_at  timestamptz NOT NULL
);
