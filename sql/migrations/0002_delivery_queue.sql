-- Delivery engine v2: queue state apart from history, one ready row per registration.
--
-- events stays the history partners page through: written when an event object is created and
-- once per attempt outcome. What changes on every claim (lease, due time, attempt counters)
-- moves to delivery_queue, a narrow table whose claim update touches no indexed column, so
-- PostgreSQL can do it as a HOT update (no index entry written). A row lives there only while
-- its event is Pending; success or a final failure deletes it.
--
-- delivery_ready holds one row per registration that ever had work: when its next work is due
-- (next_due_at, 'infinity' when there is none or the registration may not be attempted), how
-- many of its attempts are in flight across all workers, and its isolation state (adaptive
-- concurrency, slow lane, circuit breaker). The claim walks due ready rows only, with
-- FOR UPDATE SKIP LOCKED: its cost follows the work that is due, not the number of idle
-- registrations or the size of the history, and the locked row serializes the claims of that
-- one registration, which keeps its in-flight cap exact across worker processes.

CREATE TABLE delivery_queue (
    event_id           uuid PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    registration_id    uuid NOT NULL,
    created_at         timestamptz NOT NULL,
    next_attempt_at    timestamptz NOT NULL,
    -- Attempts in the current round (resend starts a new round; the retry schedule counts these).
    round_attempts     integer NOT NULL DEFAULT 0,
    attempt_count      integer NOT NULL DEFAULT 0,
    last_attempted_at  timestamptz,
    -- Lease: a worker owns the row until locked_until; past it, the row may be claimed again.
    locked_until       timestamptz,
    locked_by          text
) WITH (fillfactor = 80);  -- room on each page for the claim's HOT row versions
-- The only index besides the key: the claim's order within a registration. Never index the
-- lease columns, or the claim stops being a HOT update.
CREATE INDEX delivery_queue_due ON delivery_queue (registration_id, next_attempt_at, created_at);

CREATE TABLE delivery_ready (
    registration_id        uuid PRIMARY KEY REFERENCES registrations (id) ON DELETE CASCADE,
    next_due_at            timestamptz NOT NULL,
    -- Leased queue rows of this registration (live, or expired and not yet claimed again).
    in_flight              integer NOT NULL DEFAULT 0,
    -- Adaptive per-registration concurrency: halves on failures, grows on successes, never
    -- above BROKER_DELIVERY_PER_REGISTRATION.
    concurrency            integer NOT NULL DEFAULT 4,
    -- Recent timeouts or failures put the registration in the bounded slow lane until then.
    slow_until             timestamptz,
    breaker_state          text NOT NULL DEFAULT 'closed'
                           CHECK (breaker_state IN ('closed', 'open', 'half-open')),
    breaker_failures       integer NOT NULL DEFAULT 0,
    breaker_opened_at      timestamptz,
    breaker_next_probe_at  timestamptz
);
CREATE INDEX delivery_ready_due ON delivery_ready (next_due_at);

-- An unpause after a pause that interrupted a restart must still probe first.
ALTER TABLE registrations ADD COLUMN paused_while_restarting boolean NOT NULL DEFAULT false;

-- A placeholder attempt ("the worker stopped during this attempt") that a late real result of
-- the same attempt replaces.
ALTER TABLE attempts ADD COLUMN placeholder boolean NOT NULL DEFAULT false;

-- Move the queue state of existing Pending events, counters and leases included.
INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at,
                            round_attempts, attempt_count, last_attempted_at, locked_until,
                            locked_by)
SELECT id, registration_id, created_at, next_attempt_at, round_attempts, attempt_count,
       last_attempted_at, locked_until, locked_by
FROM events WHERE status = 'Pending';

INSERT INTO delivery_ready (registration_id, next_due_at, in_flight)
SELECT q.registration_id,
       CASE WHEN r.status IN ('Active', 'Restarting') THEN min(q.next_attempt_at)
            ELSE 'infinity' END,
       count(*) FILTER (WHERE q.locked_until IS NOT NULL)
FROM delivery_queue q JOIN registrations r ON r.id = q.registration_id
GROUP BY q.registration_id, r.status;

DROP INDEX events_pending_due;
DROP INDEX events_leased;
DROP INDEX registrations_deliverable;
ALTER TABLE events DROP COLUMN round_attempts,
                   DROP COLUMN next_attempt_at,
                   DROP COLUMN locked_until,
                   DROP COLUMN locked_by;
