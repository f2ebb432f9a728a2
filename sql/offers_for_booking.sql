-- A booking's offers for dispatchers, in the order they were made.
SELECT p.uuid AS provider_uuid, COALESCE(u.first_name, '') AS first_name, o.round, o.sent_at,
       o.expires_at, o.outcome, o.closed_at, o.distance_m, o.eta_seconds
FROM booking_offers o
JOIN providers p ON p.id = o.provider_id
JOIN users u ON u.id = p.user_id
WHERE o.booking_id = $1
ORDER BY o.id
