-- Registrations: the partner API's callback URLs and their state machine.

-- name: insert_registration
-- $6, $7: the secret and basicAuth, sealed (broker/crypto.py). $8..$17: the delivery policy, in broker.store.policy_rows.POLICY_COLUMNS order.
INSERT INTO registrations (id, partner_id, url, event_types, description, secret_sealed,
                           basic_auth_sealed,
                           delivery_timeout_seconds, retry_schedule,
                           suspend_after_consecutive_failures, rate_limit_per_second,
                           delivery_ordering, signature_scheme, signature_header,
                           signature_prefix, signature_timestamp_header, extra_headers)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
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
-- $8 true: the policy columns become $10..$19 (the merged policy the API validated), but only
-- if the row is still the version $9 it was merged from: two PATCHes racing must not lose one
-- another's fields (the loser re-reads and merges again).
UPDATE registrations SET
    url = coalesce($3, url),
    event_types = coalesce($4, event_types),
    description = coalesce($5, description),
    basic_auth_sealed = CASE WHEN $6 THEN $7 ELSE basic_auth_sealed END,
    delivery_timeout_seconds = CASE WHEN $8 THEN $10 ELSE delivery_timeout_seconds END,
    retry_schedule = CASE WHEN $8 THEN $11 ELSE retry_schedule END,
    suspend_after_consecutive_failures =
        CASE WHEN $8 THEN $12 ELSE suspend_after_consecutive_failures END,
    rate_limit_per_second = CASE WHEN $8 THEN $13 ELSE rate_limit_per_second END,
    delivery_ordering = CASE WHEN $8 THEN $14 ELSE delivery_ordering END,
    signature_scheme = CASE WHEN $8 THEN $15 ELSE signature_scheme END,
    signature_header = CASE WHEN $8 THEN $16 ELSE signature_header END,
    signature_prefix = CASE WHEN $8 THEN $17 ELSE signature_prefix END,
    signature_timestamp_header = CASE WHEN $8 THEN $18 ELSE signature_timestamp_header END,
    extra_headers = CASE WHEN $8 THEN $19 ELSE extra_headers END,
    updated_at = now()
WHERE id = $1 AND partner_id = $2 AND status <> 'Deleted'
  AND (NOT $8 OR updated_at = $9)
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
-- $3 is the new secret, sealed. Both secret columns seal with the same associated data, so the
-- current one moves to previous_secret_sealed as it is, never decrypted.
UPDATE registrations SET
    previous_secret_sealed = CASE WHEN $4 > 0 THEN secret_sealed END,
    previous_secret_expires_at = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4::float8) END,
    secret_sealed = $3,
    updated_at = now()
WHERE id = $1 AND partner_id = $2 AND status <> 'Deleted'
RETURNING *;

-- name: record_test_outcome
-- A test delivery counts towards suspendAfterConsecutiveFailures like any attempt (the
-- job-status vendor counts them too), though it changes no failureCount: consecutive_failures
-- is reset by its success and raised by its failure, and an Active registration whose count
-- reaches its threshold becomes Suspended. RETURNING the status before and after.
WITH old AS (
    SELECT id, status FROM registrations WHERE id = $1 FOR NO KEY UPDATE
)
UPDATE registrations r SET
    consecutive_failures = CASE WHEN $2 THEN 0 ELSE r.consecutive_failures + 1 END,
    status = CASE WHEN NOT $2 AND r.status = 'Active'
                       AND r.consecutive_failures + 1 >= r.suspend_after_consecutive_failures
                  THEN 'Suspended' ELSE r.status END,
    updated_at = CASE WHEN NOT $2 AND r.status = 'Active'
                           AND r.consecutive_failures + 1 >= r.suspend_after_consecutive_failures
                      THEN now() ELSE r.updated_at END
FROM old
WHERE r.id = old.id
RETURNING old.status AS was, r.status;

-- name: get_delivery_target
-- Where a delivery to this registration goes, with its live secrets (sealed) and basicAuth.
SELECT url, secret_sealed, basic_auth_sealed,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_sealed END
           AS previous_secret_sealed
FROM registrations WHERE id = $1;

-- name: sealed_key_samples
-- One sealed value per key id in use (bytes 2-5 of a sealed value), so that start-up can prove
-- the key ring opens every one of them. Deleted registrations count: reencrypt covers them too.
SELECT DISTINCT ON (kid) kid, id, kind, sealed FROM (
    SELECT id, 'secret' AS kind, secret_sealed AS sealed FROM registrations
    UNION ALL
    SELECT id, 'secret', previous_secret_sealed FROM registrations
    WHERE previous_secret_sealed IS NOT NULL
    UNION ALL
    SELECT id, 'basic_auth', basic_auth_sealed FROM registrations
    WHERE basic_auth_sealed IS NOT NULL
) AS s CROSS JOIN LATERAL (SELECT substring(sealed FROM 2 FOR 4) AS kid) AS k
ORDER BY kid, id;

-- name: registrations_to_reseal
-- Registrations with a value not sealed by the key $1 (reencrypt's work list, in batches).
SELECT id, secret_sealed, previous_secret_sealed, basic_auth_sealed FROM registrations
WHERE substring(secret_sealed FROM 2 FOR 4) <> $1
   OR substring(previous_secret_sealed FROM 2 FOR 4) <> $1
   OR substring(basic_auth_sealed FROM 2 FOR 4) <> $1
ORDER BY id
LIMIT $2;

-- name: reseal_registration
-- Compare-and-set: a rotation or PATCH that wrote meanwhile wins, and the row is read again.
UPDATE registrations
SET secret_sealed = $5, previous_secret_sealed = $6, basic_auth_sealed = $7
WHERE id = $1 AND secret_sealed = $2
  AND previous_secret_sealed IS NOT DISTINCT FROM $3
  AND basic_auth_sealed IS NOT DISTINCT FROM $4;
