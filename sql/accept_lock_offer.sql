-- The caller's latest offer of a booking, locked for the accept (the booking row is locked
-- first, so concurrent accepts of one booking queue up instead of deadlocking), with whether
-- the therapist may accept now. $3: when the accept was asked for; $4: the grace in seconds
-- (an offer accepted up to the grace after its expiry counts, for the time the offer and the
-- accept spend on the way; the matcher closes offers only once the grace has passed).
SELECT o.id, o.outcome, o.expires_at + make_interval(secs => $4) < $3 AS expired, o.distance_m,
       EXISTS (SELECT 1 FROM therapists_eligible_now e WHERE e.provider_id = o.provider_id) AS eligible
FROM booking_offers o
WHERE o.booking_id = $1 AND o.provider_id = $2
ORDER BY o.id DESC
LIMIT 1
FOR UPDATE OF o
