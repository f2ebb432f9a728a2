-- Therapists holding an active booking: busy in the live index, whichever node accepted it.
SELECT DISTINCT provider_id FROM bookings
WHERE provider_id IS NOT NULL AND type = 'home_service'
  -- under way (uq_bookings_one_active_per_provider's meaning): an accepted booking for later
  -- leaves the therapist available until they set out
  AND (status IN ('en_route', 'arrived', 'in_progress') OR (status = 'accepted' AND booking_type = 'now'))
