-- Registrations: the partner API's callback URLs and their state machine.

-- name: insert_registration
INSERT INTO registrations (id, partner_id, url, event_types, description, secret, basic_auth)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: list_registrations
SELECT * FROM registrations
WHERE partner_id = $1 AND status <> 'Deleted'
ORDER BY created_at, id;

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
-- the retention period.
DELETE FROM events WHERE registration_id = $1 AND status = 'Pending';

-- name: requeue_failed_events
UPDATE events SET status = 'Pending', round_attempts = 0, next_attempt_at = now(),
                  locked_until = NULL, locked_by = NULL
WHERE registration_id = $1 AND status = 'Failed';

-- name: rotate_secret
UPDATE registrations SET
    previous_secret = CASE WHEN $4 > 0 THEN secret END,
    previous_secret_expires_at = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4::float8) END,
    secret = $3,
    updated_at = now()
WHERE id = $1 AND partner_id = $2 AND status <> 'Deleted'
RETURNING *;
