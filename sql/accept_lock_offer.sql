-- The caller's latest offer of a booking, locked for the accept (the booking row is locked
-- first, so concurrent accepts of one booking queue up instead of deadlocking), with whether
-- the therapist may accept now. $3: when the accept was asked for; $4: the grace in seconds
-- (an offer accepted up to the grace after its expiry counts, for the time the offer and the
-- accept spend on the way; the matcher closes offers only once the grace has passed).
-- Read in the accept's transaction, whichever node made the offer or last heard the therapist:
-- `eligible` (verified, active, holding the therapist role), `online` (their availability
-- switch is on) and `busy` (they already hold an active booking; the unique index on active
-- bookings per therapist stays the last word).
SELECT o.id, o.outcome, o.expires_at + make_interval(secs => $4) < $3 AS expired, o.distance_m, o.sent_at,
       EXISTS (SELECT 1 FROM therapists_eligible_now e WHERE e.provider_id = o.provider_id) AS eligible,
       EXISTS (SELECT 1 FROM providers p WHERE p.id = o.provider_id AND p.is_available IS TRUE) AS online,
       EXISTS (SELECT 1 FROM bookings b
               WHERE b.provider_id = o.provider_id AND b.id <> $1
                 AND (b.status IN ('en_route', 'arrived', 'in_progress')
                      OR (b.status = 'accepted' AND b.booking_type = 'now'))) AS busy
FROM booking_offers o
WHERE o.booking_id = $1 AND o.provider_id = $2
ORDER BY o.id DESC
LIMIT 1
FOR UPDATE OF o
