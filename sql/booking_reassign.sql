-- A dispatcher hands a booking to another therapist: compare-and-set on the status and the
-- therapist read before ($2, $3), so a booking that moved meanwhile is left alone; the new
-- therapist ($4) starts from `accepted`. The unique index on active bookings per therapist is
-- the last word on their being free. The location records the new travel estimate
-- ($5 metres, $6 minutes). Answers the booking's id when it moved.
WITH moved AS (
    UPDATE bookings SET provider_id = $4, status = 'accepted'
    WHERE id = $1 AND status = $2 AND provider_id = $3
    RETURNING id
), located AS (
    UPDATE booking_locations
    SET distance_km = round(($5 / 1000.0)::numeric, 2), estimated_travel_time_minutes = $6
    WHERE booking_id IN (SELECT id FROM moved)
)
SELECT id FROM moved
