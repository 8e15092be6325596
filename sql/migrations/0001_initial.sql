-- broker's initial schema.
--
-- The flow the tables follow: resource_events (the ingest queue) -> window_groups (one row per
-- open (partner, event name) window, carrying its due time) -> events (one event object per
-- matching registration) -> attempts (every delivery try).

CREATE TABLE partners (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Partner and producer keys. Only a SHA-256 of the key is kept: keys are 256-bit random
-- strings, so a fast hash is enough (no dictionary to defend against) and lookups stay O(1).
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('partner', 'producer')),
    partner_id  uuid REFERENCES partners (id) ON DELETE CASCADE,
    name        text,
    key_hash    bytea NOT NULL UNIQUE,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CHECK ((kind = 'partner') = (partner_id IS NOT NULL))
);

CREATE TABLE event_types (
    name         text PRIMARY KEY,
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO event_types (name, description)
VALUES ('test.event', 'Connectivity test sent by POST /webhooks/v1/registrations/{id}/test');

CREATE TABLE registrations (
    id                  uuid PRIMARY KEY,
    partner_id          uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    url                 text NOT NULL,
    event_types         text[] NOT NULL,
    description         text NOT NULL DEFAULT '',
    status              text NOT NULL DEFAULT 'Active'
                        CHECK (status IN ('Active', 'Suspended', 'Restarting', 'Paused', 'Deleted')),
    secret              text NOT NULL,
    -- During a rotation's grace period the previous secret signs too.
    previous_secret     text,
    previous_secret_expires_at timestamptz,
    basic_auth          text,
    failure_count       integer NOT NULL DEFAULT 0,
    last_success_at     timestamptz,
    last_failure_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
CREATE INDEX registrations_partner ON registrations (partner_id, created_at);
-- The delivery claim walks only registrations that may be attempted.
CREATE INDEX registrations_deliverable ON registrations (id)
    WHERE status IN ('Active', 'Restarting');

-- The ingest queue. Rows live here only until their window closes: the aggregator deletes what
-- it folds into event objects, so this table stays small however long the broker runs.
CREATE TABLE resource_events (
    id           bigserial PRIMARY KEY,
    partner_id   uuid NOT NULL,
    event_name   text NOT NULL,
    resource     text NOT NULL,
    occurred_at  timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resource_events_group ON resource_events (partner_id, event_name, id);

-- One row per (partner, event name) with resource events waiting. due_at is the earliest of the
-- three close rules, kept current by every ingest; the aggregator claims rows whose due_at has
-- passed with FOR UPDATE SKIP LOCKED, so a window closes exactly once across processes.
CREATE TABLE window_groups (
    partner_id      uuid NOT NULL,
    event_name      text NOT NULL,
    opened_at       timestamptz NOT NULL,
    last_event_at   timestamptz NOT NULL,
    pending_count   bigint NOT NULL,
    due_at          timestamptz NOT NULL,
    PRIMARY KEY (partner_id, event_name)
);
CREATE INDEX window_groups_due ON window_groups (due_at);

-- Event objects: one per (closed window, matching registration), or one per test delivery.
CREATE TABLE events (
    id                 uuid PRIMARY KEY,
    partner_id         uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    registration_id    uuid NOT NULL REFERENCES registrations (id) ON DELETE CASCADE,
    event_name         text NOT NULL,
    resources          text[] NOT NULL,
    status             text NOT NULL DEFAULT 'Pending'
                       CHECK (status IN ('Pending', 'Success', 'Failed')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_attempted_at  timestamptz,
    attempt_count      integer NOT NULL DEFAULT 0,
    -- Attempts in the current round (resend starts a new round; the retry schedule counts these).
    round_attempts     integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    -- Lease: a worker owns the event until locked_until; past it, the event is due again.
    locked_until       timestamptz,
    locked_by          text
);
-- Events API: newest first per partner, keyset on (created_at, id).
CREATE INDEX events_partner_created ON events (partner_id, created_at DESC, id DESC);
CREATE INDEX events_registration_created ON events (registration_id, created_at DESC, id DESC);
CREATE INDEX events_partner_name_created ON events (partner_id, event_name, created_at DESC, id DESC);
CREATE INDEX events_partner_status_created ON events (partner_id, status, created_at DESC, id DESC);
-- Delivery claim: only Pending rows are indexed, so a large delivered history costs nothing.
CREATE INDEX events_pending_due ON events (registration_id, next_attempt_at, created_at)
    WHERE status = 'Pending';
-- In-flight (leased) events per registration: the claim's per-registration cap counts these,
-- and a registration with a million queued events must not make that count a scan.
CREATE INDEX events_leased ON events (registration_id)
    WHERE status = 'Pending' AND locked_until IS NOT NULL;
-- Retention purge.
CREATE INDEX events_finished_created ON events (created_at) WHERE status <> 'Pending';

CREATE TABLE attempts (
    id               bigserial PRIMARY KEY,
    event_id         uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    attempt_number   integer NOT NULL,
    attempted_at     timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    response_status  integer,
    error            text,
    response_body    text,
    UNIQUE (event_id, attempt_number)
);

-- Idempotency-Key answers of the producer API, kept 24 h.
CREATE TABLE idempotency_keys (
    producer_key_id  uuid NOT NULL,
    idempotency_key  text NOT NULL,
    response_status  integer NOT NULL,
    response_body    jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer_key_id, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
