-- Closes the given open offers that expired by now. Offers an accept has locked are skipped:
-- that accept decides, and the matcher looks again a moment later.
WITH due AS (
    SELECT o.id
    FROM booking_offers o
    JOIN UNNEST($1::bigint[], $2::bigint[]) AS x(booking_id, provider_id)
      ON o.booking_id = x.booking_id AND o.provider_id = x.provider_id
    WHERE o.outcome IS NULL AND o.expires_at <= now()
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE booking_offers o SET outcome = 'expired', closed_at = now()
FROM due WHERE o.id = due.id
RETURNING o.booking_id, o.provider_id
