-- History at scale: indexes that bound every events-API page, window state for a linear,
-- non-blocking close, and the gauge snapshot /metrics reads.

-- Events API: one index per set of equality filters, each ending in the page order. Status is
-- in every one of them, so a page without a status filter is three index ranges merged in
-- order (sql/queries/events.sql, list_events), and a page with one is a single range.
-- partner_id leads everywhere: a registrationId of another partner is an empty range, not a
-- scan of that registration's history filtered down to nothing.
-- (events_partner_status_created, from 0001, is the partner + status one.)
CREATE INDEX IF NOT EXISTS events_partner_name_status_created
    ON events (partner_id, event_name, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_partner_registration_status_created
    ON events (partner_id, registration_id, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_partner_registration_name_status_created
    ON events (partner_id, registration_id, event_name, status, created_at DESC, id DESC);
-- Served by the ones above now; each index costs every insert and every status change.
DROP INDEX IF EXISTS events_partner_created;
DROP INDEX IF EXISTS events_partner_name_created;
DROP INDEX IF EXISTS events_registration_created;

-- Window state. queued_count is the exact number of resource events the group has waiting:
-- ingest adds what it inserts, a close subtracts what it deletes, in the same transactions,
-- so a close never re-counts the remainder. consumed_through is a resource_events id at or
-- below which the group has nothing waiting: the close reads from there, past the index
-- entries of rows it already deleted (dead until vacuum) instead of over them.
-- pending_count keeps its meaning: an upper bound on distinct resources, for the size rule.
ALTER TABLE window_groups
    ADD COLUMN queued_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN consumed_through bigint NOT NULL DEFAULT 0;
UPDATE window_groups g SET queued_count = q.n
FROM (SELECT partner_id, event_name, count(*) AS n
      FROM resource_events GROUP BY partner_id, event_name) AS q
WHERE g.partner_id = q.partner_id AND g.event_name = q.event_name;

-- The database-wide gauges of /metrics, written every few seconds by one housekeeping job per
-- cluster and read by every scrape (one row), so a scrape never scans the queue.
CREATE TABLE gauge_snapshot (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    taken_at   timestamptz NOT NULL,
    gauges     jsonb NOT NULL
);
