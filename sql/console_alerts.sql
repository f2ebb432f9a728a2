-- Bookings a dispatcher should look at now. $1 pending wait (s), $2 silence (s), $3 overrun
-- margin (s). One row per alert:
--   booking_waiting:  pending longer than the wait (a scheduled one only when it is due
--                     within the hour);
--   therapist_silent: a therapist on an active home-service booking whose last stored fix
--                     (every fix on a booking is stored) is older than the silence, or who sent
--                     none since accepting that long ago;
--   session_overrun:  in progress longer than the service's duration plus the margin;
--   therapist_late:   a home visit for later whose start passed more than the silence ago
--                     while its therapist has not set out (the customer may cancel free).
SELECT 'booking_waiting' AS kind, b.uuid AS booking_id, b.booking_number, b.type::text AS place,
       b.status::text AS status, NULL::uuid AS provider_id, NULL::text AS provider_name,
       b.requested_at AS since, bl.latitude::float8 AS lat, bl.longitude::float8 AS lng,
       sp.store_name
FROM bookings b
LEFT JOIN booking_locations bl ON bl.booking_id = b.id
LEFT JOIN store_profiles sp ON sp.provider_id = b.provider_id AND b.type = 'in_store'
WHERE b.status = 'pending' AND b.deleted_at IS NULL
  AND b.requested_at < now() - make_interval(secs => $1)
  AND (b.scheduled_at IS NULL OR b.scheduled_at < now() + interval '1 hour')
UNION ALL
SELECT 'therapist_silent', b.uuid, b.booking_number, b.type::text, b.status::text, p.uuid,
       u.first_name || ' ' || u.last_name,
       COALESCE(last_fix.at, b.accepted_at), bl.latitude::float8, bl.longitude::float8, NULL
FROM bookings b
JOIN providers p ON p.id = b.provider_id
JOIN users u ON u.id = p.user_id
LEFT JOIN booking_locations bl ON bl.booking_id = b.id
LEFT JOIN LATERAL (
    SELECT pl.created_at AS at FROM provider_locations pl
    WHERE pl.provider_id = b.provider_id AND pl.created_at >= b.accepted_at
    ORDER BY pl.created_at DESC LIMIT 1
) last_fix ON true
WHERE b.type = 'home_service' AND b.deleted_at IS NULL
  AND (b.status IN ('en_route', 'arrived', 'in_progress')
       OR (b.status = 'accepted' AND b.booking_type = 'now'))
  AND COALESCE(last_fix.at, b.accepted_at) < now() - make_interval(secs => $2)
UNION ALL
SELECT 'session_overrun', b.uuid, b.booking_number, b.type::text, b.status::text, p.uuid,
       COALESCE(sp.store_name, u.first_name || ' ' || u.last_name),
       b.started_at + make_interval(mins => COALESCE(s.duration_minutes, 60)),
       bl.latitude::float8, bl.longitude::float8, sp.store_name
FROM bookings b
JOIN services s ON s.id = b.service_id
LEFT JOIN providers p ON p.id = b.provider_id
LEFT JOIN users u ON u.id = p.user_id
LEFT JOIN store_profiles sp ON sp.provider_id = b.provider_id AND b.type = 'in_store'
LEFT JOIN booking_locations bl ON bl.booking_id = b.id
WHERE b.status = 'in_progress' AND b.deleted_at IS NULL
  AND b.started_at + make_interval(mins => COALESCE(s.duration_minutes, 60))
      < now() - make_interval(secs => $3)
UNION ALL
SELECT 'therapist_late', b.uuid, b.booking_number, b.type::text, b.status::text, p.uuid,
       u.first_name || ' ' || u.last_name, b.scheduled_at,
       bl.latitude::float8, bl.longitude::float8, NULL
FROM bookings b
JOIN providers p ON p.id = b.provider_id
JOIN users u ON u.id = p.user_id
LEFT JOIN booking_locations bl ON bl.booking_id = b.id
WHERE b.type = 'home_service' AND b.booking_type = 'scheduled' AND b.status = 'accepted'
  AND b.deleted_at IS NULL
  AND b.scheduled_at < now() - make_interval(secs => $2)
ORDER BY since
LIMIT 500
