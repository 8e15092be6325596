-- Per-registration delivery policy (timeout, retries, suspension threshold, rate limit,
-- ordering, signature scheme, extra headers).
--
-- Typed columns, not one jsonb document: the delivery claim reads the rate limit, the ordering
-- and the timeout of every registration it serves, and plain columns cost nothing to read there;
-- the contract's ranges become CHECK constraints, so no writer (API, CLI, a hand-run UPDATE) can
-- store a policy the engine would have to second-guess. NULL means "the global BROKER_* default"
-- and is what every existing registration gets: nothing changes for them, and a later change of
-- the global setting still reaches them. Only the header map, free-form by nature, is jsonb.
--
-- consecutive_failures is what suspendAfterConsecutiveFailures compares with: failed attempts
-- since the last success, test deliveries included (the job-status vendor counts them, and the
-- contract says so). failure_count stays what the API has always shown (delivery attempts only;
-- a test delivery changes no status and no failureCount), so it cannot serve for both; the new
-- counter starts from it.

ALTER TABLE registrations
    ADD COLUMN delivery_timeout_seconds float8
        CHECK (delivery_timeout_seconds BETWEEN 1 AND 30),
    -- '{}' is a choice (a single attempt); NULL is the global schedule.
    ADD COLUMN retry_schedule float8[]
        CHECK (cardinality(retry_schedule) <= 20
               AND coalesce(array_ndims(retry_schedule), 1) = 1
               AND array_position(retry_schedule, NULL) IS NULL
               AND 0 <= ALL (retry_schedule) AND 86400 >= ALL (retry_schedule)),
    ADD COLUMN suspend_after_consecutive_failures integer
        CHECK (suspend_after_consecutive_failures BETWEEN 1 AND 1000),
    ADD COLUMN rate_limit_per_second float8
        CHECK (rate_limit_per_second BETWEEN 0.1 AND 10000),
    ADD COLUMN delivery_ordering text
        CHECK (delivery_ordering IN ('unordered', 'fifo')),
    ADD COLUMN signature_scheme text
        CHECK (signature_scheme IN ('standard-webhooks', 'hmac-sha256-hex', 'none')),
    ADD COLUMN signature_header text
        CHECK (length(signature_header) BETWEEN 1 AND 64),
    ADD COLUMN signature_prefix text
        CHECK (length(signature_prefix) <= 64),
    ADD COLUMN signature_timestamp_header text
        CHECK (length(signature_timestamp_header) BETWEEN 1 AND 64),
    -- {"X-Tenant": "acme"}; names keep the partner's spelling. Empty = no extra headers.
    ADD COLUMN extra_headers jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(extra_headers) = 'object'),
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0;

UPDATE registrations SET consecutive_failures = failure_count WHERE failure_count <> 0;

-- Only an hmac-sha256-hex registration has a header, prefix or timestamp header of its own.
ALTER TABLE registrations ADD CONSTRAINT registrations_hmac_fields CHECK (
    coalesce(signature_scheme = 'hmac-sha256-hex', false)
    OR (signature_header IS NULL AND signature_prefix IS NULL
        AND signature_timestamp_header IS NULL));

-- Rate limit state, on the ready row the claim already locks (FOR UPDATE SKIP LOCKED), so the
-- limit holds across every worker process without another lock: rate_next is the virtual time
-- of the registration's next attempt (GCRA). One attempt may start at rate_next, a burst of
-- up to a tenth of a second's worth when it lies in the past; every claimed attempt moves it
-- on by 1/rate. NULL: no attempt measured yet (a full burst is allowed).
ALTER TABLE delivery_ready ADD COLUMN rate_next timestamptz;

-- FIFO registrations are served strictly from the head of their queue, in createdAt order
-- (the event id breaks ties between event objects made by one window close).
CREATE INDEX delivery_queue_fifo ON delivery_queue (registration_id, created_at, event_id);
