-- Replay (POST /webhooks/v1/registrations/{id}/replay): a registration's finished event objects
-- of a time range queued again, in bounded batches. Each batch is one short transaction through
-- the resend machinery in delivery.sql (lock_registrations_of_events, then requeue_event), so a
-- replay of 100000 events never holds its registration's locks for more than one batch.

-- name: count_replay_events
-- The up-front count the 100000 limit is checked against: $1 partner, $2 registration,
-- $3 statuses, [$4, $5) created_at. test.event rows are history only and never queued, so they
-- do not count. A range of events_partner_registration_status_created per status.
SELECT count(*) FROM events
WHERE partner_id = $1 AND registration_id = $2 AND status = ANY($3::text[])
  AND created_at >= $4 AND created_at < $5
  AND event_name <> 'test.event';

-- name: replay_batch
-- The next batch of one status, oldest first, after the keyset ($6, $7): a backward range scan
-- of events_partner_registration_status_created (one status: an index order, no sort).
-- Requeued rows leave this status range, so the keyset only skips what was already done.
SELECT id, created_at FROM events
WHERE partner_id = $1 AND registration_id = $2 AND status = $3
  AND created_at >= $4 AND created_at < $5
  AND (created_at, id) > ($6::timestamptz, $7::uuid)
  AND event_name <> 'test.event'
ORDER BY created_at, id
LIMIT $8;
