-- Whether a therapist may be given a booking now, read in the giving transaction: eligible
-- (verified, active, holding the therapist role), online, holding no active booking and no
-- open offer.
SELECT EXISTS (SELECT 1 FROM therapists_eligible_now e WHERE e.provider_id = $1)
   AND EXISTS (SELECT 1 FROM providers p WHERE p.id = $1 AND p.is_available IS TRUE)
   AND NOT EXISTS (SELECT 1 FROM bookings b
                   WHERE b.provider_id = $1
                     -- under way (uq_bookings_one_active_per_provider's meaning)
                     AND (b.status IN ('en_route', 'arrived', 'in_progress')
                          OR (b.status = 'accepted' AND b.booking_type = 'now')))
   AND NOT EXISTS (SELECT 1 FROM booking_offers o
                   WHERE o.provider_id = $1 AND o.outcome IS NULL)
