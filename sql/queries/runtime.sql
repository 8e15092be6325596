-- Runtime state: the generated admin token, leader leases and portal links.

-- name: insert_admin_token
-- Only the first process against a database inserts; the others get no row and read it.
INSERT INTO admin_token (token_hash) VALUES ($1)
ON CONFLICT (singleton) DO NOTHING
RETURNING token_hash;

-- name: admin_token_hash
SELECT token_hash FROM admin_token;

-- name: replace_admin_token
INSERT INTO admin_token (token_hash) VALUES ($1)
ON CONFLICT (singleton) DO UPDATE SET token_hash = excluded.token_hash, created_at = now();

-- name: take_lease
-- Renew our own lease, or take over one that has expired; a row back means we hold it.
INSERT INTO leader_leases AS l (name, holder, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder,
    expires_at = excluded.expires_at,
    acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at ELSE now() END
WHERE l.holder = excluded.holder OR l.expires_at < now()
RETURNING holder;

-- name: release_lease
-- On a clean shutdown: another process takes over at its next try, not after the expiry.
DELETE FROM leader_leases WHERE name = $1 AND holder = $2;

-- name: lease_holder
SELECT holder FROM leader_leases WHERE name = $1 AND expires_at >= now();

-- name: insert_portal_link
-- Nothing is inserted (no row back) when the partner does not exist.
INSERT INTO portal_links (id, partner_id, token_hash, read_only, expires_at)
SELECT $1, p.id, $3, $4, now() + make_interval(secs => $5)
FROM partners p WHERE p.id = $2
RETURNING expires_at;

-- name: principal_for_portal_token
SELECT id, partner_id, read_only, expires_at
FROM portal_links
WHERE token_hash = $1 AND expires_at > now();

-- name: delete_portal_links
DELETE FROM portal_links WHERE partner_id = $1;

-- name: purge_expired_portal_links
DELETE FROM portal_links WHERE expires_at <= now();
