-- Home-service bookings that hold a therapist (pending requests naming them included) and
-- whose busy range meets [$1, $2): the busy range exactly as the exclusion constraint sees it,
-- when the session starts, and where. $3: one therapist, or all; $4: a booking to leave out.
SELECT provider_id, lower(busy) AS busy_from, upper(busy) AS busy_until, session_start, lat, lng
FROM (
    SELECT COALESCE(b.provider_id, b.requested_provider_id) AS provider_id,
           booking_busy_range(b.scheduled_at, b.accepted_at, b.travel_minutes,
                              b.duration_minutes, b.buffer_minutes) AS busy,
           COALESCE(b.scheduled_at,
                    b.accepted_at + make_interval(mins => COALESCE(b.travel_minutes, 0))) AS session_start,
           bl.latitude::float8 AS lat, bl.longitude::float8 AS lng
    FROM bookings b
    LEFT JOIN booking_locations bl ON bl.booking_id = b.id
    WHERE b.type = 'home_service'
      AND b.status IN ('pending', 'accepted', 'en_route', 'arrived', 'in_progress')
      AND COALESCE(b.provider_id, b.requested_provider_id) IS NOT NULL
      AND ($3::bigint IS NULL OR COALESCE(b.provider_id, b.requested_provider_id) = $3)
      AND ($4::bigint IS NULL OR b.id <> $4)
) held
WHERE busy IS NOT NULL AND upper(busy) > $1 AND lower(busy) < $2
ORDER BY provider_id, lower(busy)
