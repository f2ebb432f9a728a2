-- Therapists holding an active booking: busy in the live index, whichever node accepted it.
SELECT DISTINCT provider_id FROM bookings
WHERE provider_id IS NOT NULL AND status IN ('accepted', 'en_route', 'arrived', 'in_progress')
