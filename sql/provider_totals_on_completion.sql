-- A completed booking adds to its therapist's totals.
UPDATE providers p
SET total_bookings = COALESCE(p.total_bookings, 0) + 1,
    total_earnings = COALESCE(p.total_earnings, 0) + b.provider_earnings
FROM bookings b
WHERE b.id = $1 AND p.id = b.provider_id
