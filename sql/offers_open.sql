-- Opens a round's offers, only to therapists eligible and online now who hold no active
-- booking, and only for bookings still pending. A therapist already holding an open offer (from any node) is skipped by the
-- unique index. Returns the offers made.
INSERT INTO booking_offers (booking_id, provider_id, round, expires_at, distance_m, eta_seconds)
SELECT o.booking_id, o.provider_id, o.round, o.expires_at, o.distance_m, o.eta_seconds
FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::timestamptz[], $5::float8[], $6::int[])
     AS o(booking_id, provider_id, round, expires_at, distance_m, eta_seconds)
JOIN bookings b ON b.id = o.booking_id AND b.status = 'pending'
JOIN therapists_eligible_now e ON e.provider_id = o.provider_id
JOIN providers p ON p.id = o.provider_id AND p.is_available
WHERE NOT EXISTS (SELECT 1 FROM bookings a
                  WHERE a.provider_id = o.provider_id
                    -- under way, as uq_bookings_one_active_per_provider means it: a booking
                    -- for later accepted for another day does not make them busy now
                    AND (a.status IN ('en_route', 'arrived', 'in_progress')
                         OR (a.status = 'accepted' AND a.booking_type = 'now')))
ON CONFLICT DO NOTHING
RETURNING booking_id, provider_id
