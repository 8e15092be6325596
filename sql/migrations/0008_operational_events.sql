-- Operational events: the broker tells partners about their own registrations through the
-- same pipeline (API.md, "Operational events").
--
-- They are produced by triggers, not by the code paths that change a status. A transition
-- happens in several places (a result flush, restart / pause / unpause, a failing test
-- delivery, the queued-event TTL job, an operator's UPDATE), and the contract asks for exactly
-- one operational event per transition, in the transaction that makes it, whoever makes it. A
-- trigger is the one place where that holds for every writer, present and future: a crash
-- before commit loses the transition and its event together, a retry of the transition finds
-- the status already changed (the WHEN clause) and emits nothing.
--
-- A trigger only writes a row to operational_outbox (an insert: it takes no lock that another
-- transaction holds). The aggregator moves outbox rows into resource_events and window_groups
-- with the ingest code (broker/store/ingest.py), in one transaction that deletes what it moves,
-- so each row becomes exactly one resource event of the registration's partner and is
-- aggregated by the same window rules. Upserting window_groups in the trigger itself was the
-- first design: a result flush failing events of two partners would lock their window groups
-- in row order, and two such flushes could deadlock; the outbox keeps the flush's lock order.
--
-- The WHEN clauses are evaluated before the trigger function is called: the UPDATE of
-- events.status in every result flush costs no function call unless an event just failed.

INSERT INTO event_types (name, description) VALUES
    ('Broker.Registration.Suspended', 'A registration became Suspended (resource: the registration)'),
    ('Broker.Registration.Restarting', 'A registration became Restarting (resource: the registration)'),
    ('Broker.Registration.Active', 'A registration became Active again, after Restarting or unpause (resource: the registration)'),
    ('Broker.Registration.Paused', 'A registration became Paused (resource: the registration)'),
    ('Broker.Event.Failed', 'An event object became Failed (resource: the event object)')
ON CONFLICT (name) DO UPDATE SET description = excluded.description, updated_at = now();

CREATE TABLE operational_outbox (
    id          bigserial PRIMARY KEY,
    partner_id  uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    event_name  text NOT NULL,
    resource    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()  -- becomes the resource event's occurredAt
);

CREATE FUNCTION broker_emit_operational(p_partner uuid, p_event text, p_resource text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO operational_outbox (partner_id, event_name, resource)
    VALUES (p_partner, p_event, p_resource);
    PERFORM pg_notify('broker_windows', '');  -- sent at commit: the aggregator moves it
END $$;

CREATE FUNCTION broker_registration_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM broker_emit_operational(
        NEW.partner_id, 'Broker.Registration.' || NEW.status, 'webhooks/v1/registrations/' || NEW.id);
    RETURN NULL;
END $$;

-- Deleted has no operational event (the contract lists four); neither has a new registration.
CREATE TRIGGER registration_status_changed
    AFTER UPDATE OF status ON registrations
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          AND NEW.status IN ('Suspended', 'Restarting', 'Active', 'Paused'))
    EXECUTE FUNCTION broker_registration_status_changed();

CREATE FUNCTION broker_event_failed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM broker_emit_operational(
        NEW.partner_id, 'Broker.Event.Failed', 'webhooks/v1/events/' || NEW.id);
    RETURN NULL;
END $$;

-- A Broker.* event object's failure raises nothing (no event about events about events), and a
-- test delivery is inserted with its outcome (never updated to Failed): the partner who sent it
-- got that outcome in the answer to POST .../test.
CREATE TRIGGER event_failed
    AFTER UPDATE OF status ON events
    FOR EACH ROW
    WHEN (NEW.status = 'Failed' AND OLD.status IS DISTINCT FROM 'Failed'
          AND NOT starts_with(NEW.event_name, 'Broker.'))
    EXECUTE FUNCTION broker_event_failed();
