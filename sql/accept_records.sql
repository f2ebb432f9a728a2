-- What the accept records beside its compare-and-set, in one statement: the accepted offer
-- ($1) closes, the booking's ($2) location keeps the accepted therapist's distance ($3, in
-- metres) and travel time ($4, minutes), and a promo code reserved for it keeps the final
-- discount ($5).
WITH accepted_offer AS (
    UPDATE booking_offers SET outcome = 'accepted', closed_at = now() WHERE id = $1
), travel_estimate AS (
    UPDATE booking_locations
    SET distance_km = round(($3 / 1000.0)::numeric, 2), estimated_travel_time_minutes = $4
    WHERE booking_id = $2
)
UPDATE promo_code_usages SET discount_amount = $5 WHERE booking_id = $2
