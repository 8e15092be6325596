-- History in day partitions, and a window's resources stored once.
--
-- events and attempts become native range partitions, one per UTC day, keyed by the event id:
-- event ids are uuid7 (RFC 9562), whose first 48 bits are the creation time in milliseconds,
-- so a day is one contiguous id range. Keying by the id (not a separate created_at) keeps every
-- lookup by id (a result flush, GET of one event, its attempts) pruned to one partition, and
-- the primary key stays (id). created_at is now derived from the id (a generated column), so
-- the history order (created_at, id) is simply id order: pages scan partitions newest first and
-- stop at the page (an ordered Append), and the createdAfter/createdBefore bounds are id bounds
-- that prune whole days.
--
-- Retention drops whole day partitions (broker_drop_history_day) instead of DELETE, so the
-- table does not bloat; a day that still holds queued (Pending) work is kept until it holds
-- none. Housekeeping creates the partitions 2 days ahead (broker_ensure_history_partitions).
--
-- windows holds each closed window's resources once; the event objects of its matching
-- registrations reference it (events.window_id). A 1000-resource window to 10 registrations was
-- 10 copies of the array.
--
-- The foreign keys from attempts and delivery_queue to events are dropped: a foreign key into a
-- partitioned table makes dropping a day partition scan the referencing tables (measured 181 ms
-- for 200k rows, with the parent locked), and both are kept consistent by the statements that
-- write them (attempts of a day live in that day's attempts partition and are dropped with it;
-- a queued event's day is never dropped).

-- The millisecond timestamp of a uuid7, as timestamptz (exact: integer seconds, then ms).
CREATE FUNCTION broker_uuid7_time(id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT to_timestamp((ms / 1000)::float8) + (ms % 1000) * interval '1 millisecond'
    FROM (SELECT ('x' || left(replace(id::text, '-', ''), 12))::bit(48)::bigint AS ms) AS t
$$;

-- The smallest uuid whose uuid7 time is the millisecond of `at` (rounded down).
CREATE FUNCTION broker_uuid7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

-- A uuid7 made at `at`: its millisecond, the version nibble, then random bits (with the
-- variant bits of gen_random_uuid). For SQL that makes event objects: tests, benches, and the
-- re-keying below.
CREATE FUNCTION broker_uuid7(at timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE STRICT AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
            || substr(replace(gen_random_uuid()::text, '-', ''), 14, 19))::uuid
$$;

-- The partitions of windows, events and attempts for each UTC day in [first_day, last_day] that
-- do not exist yet. Returns how many tables it made.
CREATE FUNCTION broker_ensure_history_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    t text;
    made integer := 0;
BEGIN
    FOR d IN SELECT g::date FROM generate_series(first_day, last_day, interval '1 day') AS g LOOP
        FOREACH t IN ARRAY ARRAY['windows', 'events', 'attempts'] LOOP
            IF to_regclass(format('%I', t || '_p' || to_char(d, 'YYYYMMDD'))) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               t || '_p' || to_char(d, 'YYYYMMDD'), t,
                               broker_uuid7_floor(d::timestamp AT TIME ZONE 'UTC'),
                               broker_uuid7_floor((d + 1)::timestamp AT TIME ZONE 'UTC'));
                made := made + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN made;
END
$$;

-- Retention of one day: its events and attempts partitions are dropped unless a queued event
-- of that day remains ('queued'), and the windows partitions no remaining event can reference.
-- The events partition is locked first, so a resend of one of its events (which makes a queue
-- row) either committed before the check or waits and then finds nothing. The caller sets
-- lock_timeout: a long history query makes this wait for it, and every query behind this one.
-- 'dropped', 'queued' or 'missing'.
CREATE FUNCTION broker_drop_history_day(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    suffix text := to_char(day, 'YYYYMMDD');
    w record;
BEGIN
    IF to_regclass('events_p' || suffix) IS NULL THEN
        RETURN 'missing';
    END IF;
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', 'events_p' || suffix);
    IF EXISTS (SELECT 1 FROM delivery_queue
               WHERE event_id >= broker_uuid7_floor(day::timestamp AT TIME ZONE 'UTC')
                 AND event_id < broker_uuid7_floor((day + 1)::timestamp AT TIME ZONE 'UTC')) THEN
        RETURN 'queued';
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS %I', 'attempts_p' || suffix);
    EXECUTE format('DROP TABLE %I', 'events_p' || suffix);
    -- A window's events are made in the same statement as the window, within milliseconds of
    -- it: they are in its day or, across midnight, the next one. So windows of day W go once
    -- neither events of W nor of W + 1 remain.
    FOR w IN
        SELECT c.relname, to_date(substr(c.relname, 10), 'YYYYMMDD') AS wday
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'windows'::regclass AND c.relname ~ '^windows_p[0-9]{8}$'
          AND to_date(substr(c.relname, 10), 'YYYYMMDD') <= day
    LOOP
        IF to_regclass('events_p' || to_char(w.wday, 'YYYYMMDD')) IS NULL
           AND to_regclass('events_p' || to_char(w.wday + 1, 'YYYYMMDD')) IS NULL THEN
            EXECUTE format('DROP TABLE %I', w.relname);
        END IF;
    END LOOP;
    RETURN 'dropped';
END
$$;

-- The tables of 0001-0010 step aside; their rows move below.
ALTER TABLE delivery_queue DROP CONSTRAINT delivery_queue_event_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_event_id_fkey;
ALTER TABLE events RENAME TO events_v10;
ALTER TABLE attempts RENAME TO attempts_v10;
DROP TRIGGER event_failed ON events_v10;

CREATE TABLE windows (
    id          uuid NOT NULL,
    partner_id  uuid NOT NULL,
    event_name  text NOT NULL,
    resources   text[] NOT NULL,
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);

CREATE TABLE events (
    id                 uuid NOT NULL,
    partner_id         uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    registration_id    uuid NOT NULL REFERENCES registrations (id) ON DELETE CASCADE,
    event_name         text NOT NULL,
    -- The closed window whose resources this event object carries (none for a test delivery).
    window_id          uuid,
    status             text NOT NULL DEFAULT 'Pending'
                       CHECK (status IN ('Pending', 'Success', 'Failed')),
    created_at         timestamptz NOT NULL GENERATED ALWAYS AS (broker_uuid7_time(id)) STORED,
    last_attempted_at  timestamptz,
    attempt_count      integer NOT NULL DEFAULT 0,
    trace_parent       text,
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
-- Events API (sql/queries/events.sql, list_events): one index per set of equality filters, each
-- ending in the page order, status in each (a page without a status filter merges three
-- ranges). created_at is no longer in them: the id is the order.
CREATE INDEX events_partner_status ON events (partner_id, status, id DESC);
CREATE INDEX events_partner_name_status ON events (partner_id, event_name, status, id DESC);
CREATE INDEX events_partner_registration_status
    ON events (partner_id, registration_id, status, id DESC);
CREATE INDEX events_partner_registration_name_status
    ON events (partner_id, registration_id, event_name, status, id DESC);

CREATE TABLE attempts (
    event_id         uuid NOT NULL,
    attempt_number   integer NOT NULL,
    attempted_at     timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    response_status  integer,
    error            text,
    response_body    text,
    placeholder      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (event_id, attempt_number)
) PARTITION BY RANGE (event_id);

CREATE TRIGGER event_failed
    AFTER UPDATE OF status ON events
    FOR EACH ROW
    WHEN (NEW.status = 'Failed' AND OLD.status IS DISTINCT FROM 'Failed'
          AND NOT starts_with(NEW.event_name, 'Broker.'))
    EXECUTE FUNCTION broker_event_failed();

-- Every event id of 0001-0010 was made by broker as a uuid7. A row whose id is not one (made by
-- hand) gets a new uuid7 at its created_at, and its attempts and queue row follow it.
CREATE TEMP TABLE rekeyed ON COMMIT DROP AS
SELECT id AS old_id, broker_uuid7(created_at) AS new_id
FROM events_v10
WHERE substr(id::text, 15, 1) <> '7'
   OR broker_uuid7_time(id) NOT BETWEEN timestamptz '2000-01-01' AND now() + interval '1 day';
UPDATE delivery_queue q SET event_id = r.new_id FROM rekeyed r WHERE q.event_id = r.old_id;

CREATE TEMP TABLE moved ON COMMIT DROP AS
SELECT e.*, coalesce(r.new_id, e.id) AS new_id
FROM events_v10 e LEFT JOIN rekeyed r ON r.old_id = e.id;

SELECT broker_ensure_history_partitions(
    least(coalesce((SELECT min(broker_uuid7_time(new_id)) FROM moved), now()),
          now() - interval '1 day')::date,
    (now() + interval '2 days')::date);

-- A window was closed into its event objects by one statement: they share partner, event
-- name, resources and (the statement's now()) created_at. Each such group becomes one window,
-- keyed by its first event's id (so it is in that event's day).
CREATE TEMP TABLE window_of ON COMMIT DROP AS
SELECT new_id,
       first_value(new_id) OVER (PARTITION BY partner_id, event_name, created_at, resources
                                 ORDER BY new_id) AS window_id
FROM moved
WHERE cardinality(resources) > 0;

INSERT INTO windows (id, partner_id, event_name, resources)
SELECT m.new_id, m.partner_id, m.event_name, m.resources
FROM moved m JOIN window_of w ON w.new_id = m.new_id AND w.window_id = m.new_id;

INSERT INTO events (id, partner_id, registration_id, event_name, window_id, status,
                    last_attempted_at, attempt_count, trace_parent)
SELECT m.new_id, m.partner_id, m.registration_id, m.event_name, w.window_id, m.status,
       m.last_attempted_at, m.attempt_count, m.trace_parent
FROM moved m LEFT JOIN window_of w ON w.new_id = m.new_id;

INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms, response_status,
                      error, response_body, placeholder)
SELECT m.new_id, a.attempt_number, a.attempted_at, a.duration_ms, a.response_status, a.error,
       a.response_body, a.placeholder
FROM attempts_v10 a JOIN moved m ON m.id = a.event_id;

-- The queue keeps the event's creation time in the event's own (now derived) terms, so the
-- claim's (next_attempt_at, created_at) order and FIFO order agree with the history order.
UPDATE delivery_queue q SET created_at = e.created_at
FROM events e WHERE e.id = q.event_id AND q.created_at <> e.created_at;

-- Event objects as the events API shows them, resources included: for an operator at a psql
-- prompt (the store's queries read the window per row instead, which plans better).
CREATE VIEW event_objects AS
SELECT e.*, coalesce(w.resources, ARRAY[]::text[]) AS resources
FROM events e LEFT JOIN windows w ON w.id = e.window_id;

DROP TABLE attempts_v10;
DROP TABLE events_v10;
ANALYZE windows;
ANALYZE events;
ANALYZE attempts;
