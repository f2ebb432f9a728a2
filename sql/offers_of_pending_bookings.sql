-- Every offer of the bookings still pending, for a matcher taking over its region.
SELECT o.booking_id, o.provider_id, o.round, o.expires_at, o.outcome
FROM booking_offers o
JOIN bookings b ON b.id = o.booking_id
WHERE b.status = 'pending'
ORDER BY o.id
