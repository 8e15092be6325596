-- Registrations: the partner API's callback URLs and their state machine.

-- name: insert_registration
INSERT INTO registrations (id, partner_id, url, event_types, description, secret, basic_auth)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: list_registrations
-- A page, oldest first; the next page starts after ($2, $3). Two texts, not "$2 IS NULL OR",
-- so that each keeps a plan that uses registrations_partner.
SELECT * FROM registrations
WHERE partner_id = $1 AND status <> 'Deleted'
ORDER BY created_at, id
LIMIT $2;

-- name: list_registrations_after
SELECT * FROM registrations
WHERE partner_id = $1 AND status <> 'Deleted' AND (created_at, id) > ($2, $3)
ORDER BY created_at, id
LIMIT $4;

-- name: count_live_registrations
SELECT count(*) FROM registrations WHERE partner_id = $1 AND status <> 'Deleted';

-- name: lock_partner
-- Serializes a partner's registration creates, so the quota holds under concurrent requests.
SELECT id FROM partners WHERE id = $1 FOR UPDATE;

-- name: get_registration
-- Deleted registrations are gone for the partner: 404 like any unknown id.
SELECT * FROM registrations
WHERE id = $1 AND partner_id = $2 AND status <> 'Deleted';

-- name: get_registration_any_status
SELECT * FROM registrations WHERE id = $1 AND partner_id = $2;

-- name: update_registration
-- Guarded by status: a registration deleted meanwhile is not resurrected by a PATCH.
UPDATE registrations SET
    url = coalesce($3, url),
    event_types = coalesce($4, event_types),
    description = coalesce($5, description),
    basic_auth = CASE WHEN $6 THEN $7 ELSE basic_auth END,
    updated_at = now()
WHERE id = $1 AND partner_id = $2 AND status <> 'Deleted'
RETURNING *;

-- name: transition_registration
-- One step of the state machine. $3 = allowed current statuses, $4 = new status.
UPDATE registrations SET
    status = $4,
    updated_at = now(),
    deleted_at = CASE WHEN $4 = 'Deleted' THEN now() ELSE deleted_at END
WHERE id = $1 AND partner_id = $2 AND status = ANY($3::text[])
RETURNING *;

-- name: discard_queued_events
-- A deleted registration's queued events are discarded; delivered and failed ones stay for
-- the retention period. An event whose attempt may still be in flight (lease live, or expired
-- less than a minute ago) is left alone: deleting it would make recording that attempt fail
-- on the attempts -> events foreign key. discard_orphaned_events removes it later if it is
-- still Pending then.
DELETE FROM events
WHERE registration_id = $1 AND status = 'Pending'
  AND (locked_until IS NULL OR locked_until < now() - interval '1 minute');

-- name: discard_orphaned_events
-- Housekeeping: Pending events of Deleted registrations left by discard_queued_events.
DELETE FROM events ev USING registrations r
WHERE r.status = 'Deleted' AND ev.registration_id = r.id AND ev.status = 'Pending'
  AND (ev.locked_until IS NULL OR ev.locked_until < now() - interval '1 minute');

-- name: requeue_failed_events
-- Due at its creation time, so that it drains in creation order with the rest of the queue.
UPDATE events SET status = 'Pending', round_attempts = 0, next_attempt_at = created_at,
                  locked_until = NULL, locked_by = NULL
WHERE registration_id = $1 AND status = 'Failed';

-- name: reorder_queue_for_restart
-- On restart the whole queue is due at once and drains in creation order: the claim orders
-- by (next_attempt_at, created_at), and a failed probe or a retry backoff from before the
-- suspension would otherwise put an older event behind newer ones. Events queued while
-- suspended already have next_attempt_at = created_at and are not rewritten.
UPDATE events SET next_attempt_at = created_at
WHERE registration_id = $1 AND status = 'Pending' AND next_attempt_at <> created_at;

-- name: rotate_secret
UPDATE registrations SET
    previous_secret = CASE WHEN $4 > 0 THEN secret END,
    previous_secret_expires_at = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4::float8) END,
    secret = $3,
    updated_at = now()
WHERE id = $1 AND partner_id = $2 AND status <> 'Deleted'
RETURNING *;
