-- The stored fixes of a therapist between two instants (a booking's acceptance and its
-- arrival), in order. Bounding created_at lets PostgreSQL skip other months' partitions, and
-- idx_provider_locations_provider_created answers the rest. $1 provider, $2 from, $3 to.
SELECT latitude::float8 AS lat, longitude::float8 AS lng, created_at AS at,
       accuracy::float8 AS accuracy_m, heading::float8 AS heading, speed::float8 AS speed_kmh
FROM provider_locations
WHERE provider_id = $1 AND created_at >= $2 AND created_at <= $3
ORDER BY created_at, id
LIMIT $4
