-- Replay (POST /webhooks/v1/registrations/{id}/replay): a registration's finished event objects
-- of a time range queued again, in bounded batches. Each batch is one short transaction through
-- the resend machinery in delivery.sql (lock_registrations_of_events, then requeue_event), so a
-- replay of 100000 events never holds its registration's locks for more than one batch.

-- name: count_replay_events
-- The up-front count the 100000 limit is checked against: $1 partner, $2 registration,
-- $3 statuses, [$4, $5) an id range (created_at is the id's millisecond, migration 0011: the
-- store turns [since, until) into ids). test.event rows are history only and never queued, so
-- they do not count. A range of events_partner_registration_status per status, over the days
-- the range covers.
SELECT count(*) FROM events
WHERE partner_id = $1 AND registration_id = $2 AND status = ANY($3::text[])
  AND id >= $4::uuid AND id < $5::uuid
  AND event_name <> 'test.event';

-- name: replay_batch
-- The next batch of one status, oldest first, after id $6 (the keyset) and before $5: a
-- backward range scan of events_partner_registration_status (one status: an index order, no
-- sort). Requeued rows leave this status range, so the keyset only skips what was done.
SELECT id FROM events
WHERE partner_id = $1 AND registration_id = $2 AND status = $3
  AND id > $4::uuid AND id < $5::uuid
  AND event_name <> 'test.event'
ORDER BY id
LIMIT $6;
