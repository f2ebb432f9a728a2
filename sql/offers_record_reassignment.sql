-- A reassignment in the booking's offers: an offer to the new therapist ($2), accepted at once
-- on their behalf by the dispatcher, in the next round.
INSERT INTO booking_offers (booking_id, provider_id, round, expires_at, distance_m, eta_seconds,
                            outcome, closed_at)
SELECT $1, $2, COALESCE(max(round), 0) + 1, now(), $3, $4, 'accepted', now()
FROM booking_offers WHERE booking_id = $1
