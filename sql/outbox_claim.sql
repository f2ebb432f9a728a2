-- Claims due outbox deliveries of one channel ($1) for one worker: at most $3 per target (so a
-- receiver that is slow or down never fills a batch), none for targets in $2 (this worker
-- already has them in flight), at most $4 in all. Only the head of the channel's queue ($6
-- rows, in due order, through idx_outbox_channel_due) is looked at, so a backlog of thousands
-- costs a claim no more than a short queue. Rows another worker is claiming are skipped, not
-- waited for (FOR UPDATE SKIP LOCKED); a claimed row is leased for $5 seconds by moving
-- next_attempt_at, so a worker that dies mid-delivery leaves it to be claimed again
-- (at-least-once).
WITH head AS (
    SELECT id, target, next_attempt_at
    FROM outbox
    WHERE status = 'pending'
      AND channel = $1
      AND next_attempt_at <= now()
      AND NOT (target = ANY($2))
    ORDER BY next_attempt_at, id
    LIMIT $6
), due AS (
    SELECT id,
           row_number() OVER (PARTITION BY target ORDER BY next_attempt_at, id) AS nth
    FROM head
), picked AS (
    -- The ids as an array, so even a generic plan looks them up by primary key rather than
    -- joining the whole table (under load that join cost 30 ms a claim).
    SELECT o.id
    FROM outbox o
    WHERE o.id = ANY (ARRAY(SELECT id FROM due WHERE nth <= $3))
      AND o.status = 'pending'
      AND o.next_attempt_at <= now()
    ORDER BY o.next_attempt_at, o.id
    LIMIT $4
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE outbox o
SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => $5),
    updated_at = now()
FROM picked
WHERE o.id = picked.id
RETURNING o.id, o.uuid, o.channel, o.target, o.endpoint_id, o.event_type, o.payload, o.attempts,
          o.created_at
