-- Verified, active stores selling a service in store, within a radius, nearest first.
-- $1 lat, $2 lng, $3 service id, $4 radius (m), $5 limit.
-- The inner query is a KNN scan of the GiST index on store_profiles.location
-- (`ORDER BY location <-> point LIMIT k`): the index yields stores nearest first and the scan
-- stops once enough stores pass the filters. The index orders on the sphere while distances
-- are geodesic (geography's spheroid, up to 0.5 % apart), so it fetches twice the limit plus
-- ten, re-sorts those by the geodesic distance and keeps the limit within the radius: the same
-- stores as filtering and sorting the whole table.
WITH here AS (SELECT ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography AS point)
SELECT nearest.* FROM (
    SELECT p.uuid, sp.store_name, sp.address_line1, sp.city,
           sp.latitude::float8 AS lat, sp.longitude::float8 AS lng,
           ST_Distance(sp.location, here.point) AS distance_m,
           ps.price, COALESCE(s.currency, 'PHP') AS currency,
           COALESCE(s.duration_minutes, 60) AS duration_minutes,
           sp.timezone, sp.operating_hours, COALESCE(sp.number_of_rooms, 1) AS number_of_rooms,
           sp.amenities, COALESCE(p.average_rating, 0) AS average_rating,
           p.id
    FROM here, store_profiles sp
    JOIN providers p ON p.id = sp.provider_id
    JOIN provider_services ps ON ps.provider_id = p.id AND ps.service_id = $3
    JOIN services s ON s.id = ps.service_id
    WHERE p.type = 'store'
      AND p.verification_status = 'verified'
      AND p.is_active IS NOT FALSE
      AND p.deleted_at IS NULL
      AND ps.store_service_enabled IS TRUE
      AND ps.is_available IS NOT FALSE
    ORDER BY sp.location <-> here.point
    LIMIT $5 * 2 + 10
) nearest
WHERE nearest.distance_m <= $4
ORDER BY nearest.distance_m, nearest.id
LIMIT $5
