-- The accept's compare-and-set: only a booking still pending is taken, with its final price
-- and, for a `now` booking, the travel estimate that starts its busy range. The caller appends
-- the actor's condition ($12, $13: `store::actor_condition`).
UPDATE bookings
SET status = 'accepted', provider_id = $2, accepted_at = now(),
    service_price = $3, distance_surcharge = $4, platform_fee = $5, promo_discount = $6,
    total_amount = $7, commission_rate = $8, commission_amount = $9, provider_earnings = $10,
    travel_minutes = CASE WHEN booking_type = 'now' THEN $11 END
WHERE id = $1 AND status = 'pending'
