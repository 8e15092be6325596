-- Runtime state shared by every process of one broker: the generated admin token, leader leases
-- (housekeeping runs in one process at a time) and the partners' portal links.

-- The admin token generated when BROKER_ADMIN_TOKEN is unset. One row per database (the
-- primary key only admits true), so the first `broker serve` creates it and every later process
-- accepts the same token. Only a SHA-256 of it is kept, like every other key.
CREATE TABLE admin_token (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    token_hash  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A named job that must run in one process of the cluster at a time. The holder renews
-- expires_at well before it passes; a holder that dies stops renewing and another process takes
-- the row over once it has expired. Times are the database's, so host clocks do not matter.
CREATE TABLE leader_leases (
    name         text PRIMARY KEY,
    holder       text NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- Short-lived sign-in links an operator's platform creates for its partner: the token is a
-- bearer credential for that partner's /webhooks/v1 until expires_at (read-only ones refuse
-- every write). Revoking deletes the partner's rows; housekeeping deletes expired ones.
CREATE TABLE portal_links (
    id          uuid PRIMARY KEY,
    partner_id  uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    read_only   boolean NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX portal_links_partner ON portal_links (partner_id);
CREATE INDEX portal_links_expiry ON portal_links (expires_at);

-- Trace context carried by the work itself (broker/tracing.py): W3C traceparent text, NULL while
-- tracing is off. A window keeps the contexts of (up to 16 of) the ingest commits that fed it;
-- an event object keeps the context of the close that made it, which its attempts continue.
ALTER TABLE window_groups ADD COLUMN trace_links text[];
ALTER TABLE events ADD COLUMN trace_parent text;
