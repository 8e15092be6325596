-- Partners, keys and the event-type catalog (admin API), plus key lookup for authentication.

-- name: principals_for_key_hashes
-- The live keys among $1 (SHA-256 digests): one query checks every request waiting for it.
SELECT id, kind, partner_id, key_hash
FROM api_keys
WHERE key_hash = ANY($1::bytea[]) AND revoked_at IS NULL;

-- name: insert_partner
INSERT INTO partners (id, name) VALUES ($1, $2)
RETURNING id, name, created_at;

-- name: list_partners
-- A page, oldest first; list_partners_after continues after ($1, $2).
SELECT id, name, created_at FROM partners ORDER BY created_at, id LIMIT $1;

-- name: list_partners_after
SELECT id, name, created_at FROM partners
WHERE (created_at, id) > ($1, $2)
ORDER BY created_at, id
LIMIT $3;

-- name: partner_exists
SELECT EXISTS (SELECT 1 FROM partners WHERE id = $1);

-- name: existing_partner_ids
SELECT id FROM partners WHERE id = ANY($1::uuid[]);

-- name: insert_api_key
INSERT INTO api_keys (id, kind, partner_id, name, key_hash, key_prefix)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, created_at;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now()
WHERE id = $1 AND revoked_at IS NULL
RETURNING id;

-- name: api_key_exists
SELECT EXISTS (SELECT 1 FROM api_keys WHERE id = $1);

-- name: upsert_event_type
-- xmax = 0 only on a freshly inserted row: tells 201 from 200.
INSERT INTO event_types (name, description) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET description = excluded.description, updated_at = now()
RETURNING name, description, created_at, updated_at, (xmax = 0) AS inserted;

-- name: list_event_types
SELECT name, description, created_at, updated_at FROM event_types ORDER BY name;

-- name: existing_event_type_names
SELECT name FROM event_types WHERE name = ANY($1::text[]);
