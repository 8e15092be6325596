-- Registrations: the partner API's callback URLs and their state machine.

-- name: insert_registration
INSERT INTO registrations (id, partner_id, url, event_types, description, secret, basic_auth)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: list_registrations
-- A page, oldest first; the next page starts after ($2, $3). Two texts, not "$2 IS NULL OR",
-- so that each keeps a plan that uses registrations_partner.
SELECT r.*, d.breaker_state, d.breaker_opened_at, d.breaker_next_probe_at
FROM registrations r LEFT JOIN delivery_ready d ON d.registration_id = r.id
WHERE r.partner_id = $1 AND r.status <> 'Deleted'
ORDER BY r.created_at, r.id
LIMIT $2;

-- name: list_registrations_after
SELECT r.*, d.breaker_state, d.breaker_opened_at, d.breaker_next_probe_at
FROM registrations r LEFT JOIN delivery_ready d ON d.registration_id = r.id
WHERE r.partner_id = $1 AND r.status <> 'Deleted' AND (r.created_at, r.id) > ($2, $3)
ORDER BY r.created_at, r.id
LIMIT $4;

-- name: count_live_registrations
SELECT count(*) FROM registrations WHERE partner_id = $1 AND status <> 'Deleted';

-- name: lock_partner
-- Serializes a partner's registration creates, so the quota holds under concurrent requests.
SELECT id FROM partners WHERE id = $1 FOR UPDATE;

-- name: get_registration
-- Deleted registrations are gone for the partner: 404 like any unknown id. The breaker comes
-- from the registration's delivery state (none yet: closed).
SELECT r.*, d.breaker_state, d.breaker_opened_at, d.breaker_next_probe_at
FROM registrations r LEFT JOIN delivery_ready d ON d.registration_id = r.id
WHERE r.id = $1 AND r.partner_id = $2 AND r.status <> 'Deleted';

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
    deleted_at = CASE WHEN $4 = 'Deleted' THEN now() ELSE deleted_at END,
    -- Remembered so that unpause goes back to Restarting: the probe is still owed.
    paused_while_restarting = ($4 = 'Paused' AND status = 'Restarting')
WHERE id = $1 AND partner_id = $2 AND status = ANY($3::text[])
RETURNING *;

-- name: rotate_secret
UPDATE registrations SET
    previous_secret = CASE WHEN $4 > 0 THEN secret END,
    previous_secret_expires_at = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4::float8) END,
    secret = $3,
    updated_at = now()
WHERE id = $1 AND partner_id = $2 AND status <> 'Deleted'
RETURNING *;
